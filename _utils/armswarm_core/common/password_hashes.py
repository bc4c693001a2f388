"""crypt(3) password hashes without Python's ``crypt`` module (gone in Python 3.13, Debian 13).

Salt's ``shadow.gen_password`` needs ``crypt`` (or passlib), so on a Debian 13 board it fails.
Here: SHA-512 crypt (``$6$``, what Debian's ``passwd``, ``mkpasswd -m sha-512`` and ``openssl
passwd -6`` write) in pure Python after Ulrich Drepper's specification, and any other method the
system's libcrypt knows (bcrypt ``$2b$``, yescrypt ``$y$``), called through ``ctypes`` as the
old module did. Plaintext passwords never appear in an exception message.
"""

import ctypes
import ctypes.util
import hashlib
import hmac
import secrets
import threading

from armswarm_core import ArmswarmError

# crypt(3)'s base-64 alphabet (not RFC 4648's).
ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ROUNDS_DEFAULT = 5000
ROUNDS_MIN = 1000
ROUNDS_MAX = 999_999_999
SALT_MAX = 16

# The byte order in which SHA-512 crypt spreads the 64-byte digest over 22-bit groups.
_SHA512_ORDER = (
    (0, 21, 42),
    (22, 43, 1),
    (44, 2, 23),
    (3, 24, 45),
    (25, 46, 4),
    (47, 5, 26),
    (6, 27, 48),
    (28, 49, 7),
    (50, 8, 29),
    (9, 30, 51),
    (31, 52, 10),
    (53, 11, 32),
    (12, 33, 54),
    (34, 55, 13),
    (56, 14, 35),
    (15, 36, 57),
    (37, 58, 16),
    (59, 17, 38),
    (18, 39, 60),
    (40, 61, 19),
    (62, 20, 41),
)

_LIBCRYPT_LOCK = threading.Lock()


def _b64_from_24bit(b2: int, b1: int, b0: int, count: int) -> str:
    value = (b2 << 16) | (b1 << 8) | b0
    out = []
    for _ in range(count):
        out.append(ITOA64[value & 0x3F])
        value >>= 6
    return "".join(out)


def _repeat(digest: bytes, length: int) -> bytes:
    return (digest * (length // len(digest) + 1))[:length]


def sha512_crypt(password: str | bytes, salt: str, rounds: int | None = None) -> str:
    """The ``$6$`` hash of ``password`` with ``salt`` (at most 16 characters are used).

    ``rounds`` None means the default 5000, written without a ``rounds=`` field (as the C
    implementation does); an explicit value is clamped to 1000..999999999 and written.
    """
    if isinstance(password, str):
        password = password.encode("utf-8")
    if not isinstance(salt, str) or "$" in salt or "\n" in salt or ":" in salt:
        raise ArmswarmError("sha512_crypt: the salt must be a string without '$', ':' or newline")
    explicit_rounds = rounds is not None
    if explicit_rounds:
        if isinstance(rounds, bool) or not isinstance(rounds, int):
            raise ArmswarmError(f"sha512_crypt: rounds must be an integer, not {rounds!r}")
        rounds = min(max(rounds, ROUNDS_MIN), ROUNDS_MAX)
    else:
        rounds = ROUNDS_DEFAULT
    salt_bytes = salt.encode("utf-8")[:SALT_MAX]
    salt = salt_bytes.decode("utf-8", errors="ignore")
    salt_bytes = salt.encode("utf-8")
    plen = len(password)

    alt = hashlib.sha512(password + salt_bytes + password).digest()
    ctx = hashlib.sha512(password + salt_bytes)
    ctx.update(_repeat(alt, plen))
    length = plen
    while length:
        ctx.update(alt if length & 1 else password)
        length >>= 1
    a_digest = ctx.digest()

    p_bytes = _repeat(hashlib.sha512(password * plen).digest(), plen)
    s_bytes = _repeat(hashlib.sha512(salt_bytes * (16 + a_digest[0])).digest(), len(salt_bytes))

    digest = a_digest
    for i in range(rounds):
        ctx = hashlib.sha512()
        ctx.update(p_bytes if i & 1 else digest)
        if i % 3:
            ctx.update(s_bytes)
        if i % 7:
            ctx.update(p_bytes)
        ctx.update(digest if i & 1 else p_bytes)
        digest = ctx.digest()

    encoded = "".join(
        _b64_from_24bit(digest[a], digest[b], digest[c], 4) for a, b, c in _SHA512_ORDER
    )
    encoded += _b64_from_24bit(0, 0, digest[63], 2)
    prefix = f"$6$rounds={rounds}$" if explicit_rounds else "$6$"
    return f"{prefix}{salt}${encoded}"


def gen_salt(length: int = SALT_MAX) -> str:
    return "".join(secrets.choice(ITOA64) for _ in range(length))


def _parse_sha512(hashed: str) -> tuple[str, int | None]:
    """``(salt, rounds or None)`` of a ``$6$`` hash."""
    parts = hashed.split("$")
    # ['', '6', 'rounds=N', salt, hash] or ['', '6', salt, hash]
    if len(parts) == 5 and parts[2].startswith("rounds="):
        try:
            return parts[3], int(parts[2][len("rounds=") :])
        except ValueError as exc:
            raise ArmswarmError("not a SHA-512 crypt hash: bad rounds field") from exc
    if len(parts) == 4:
        return parts[2], None
    raise ArmswarmError("not a SHA-512 crypt hash")


# -- the system's libcrypt ---------------------------------------------------------------------
def _libcrypt():
    name = ctypes.util.find_library("crypt")
    if not name:
        return None
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
    return lib


def libcrypt(password: str, setting: str) -> str | None:
    """crypt(3) of the system's libcrypt (libxcrypt on Debian): None when there is none or it
    does not know the method of ``setting``."""
    lib = _libcrypt()
    if lib is None:
        return None
    with _LIBCRYPT_LOCK:  # crypt() returns a static buffer
        raw = lib.crypt(password.encode("utf-8"), setting.encode("utf-8"))
    if not raw or raw.startswith(b"*"):
        return None
    return raw.decode("utf-8")


def libcrypt_gensalt(prefix: str, rounds: int = 0) -> str | None:
    """A setting string for ``prefix`` (``$2b$``, ``$y$``…) from libxcrypt's crypt_gensalt."""
    lib = _libcrypt()
    if lib is None or not hasattr(lib, "crypt_gensalt"):
        return None
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = (ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int)
    with _LIBCRYPT_LOCK:
        raw = lib.crypt_gensalt(prefix.encode(), rounds, None, 0)
    return raw.decode() if raw else None


# -- the public path -----------------------------------------------------------------------------
METHODS = {"sha512": "$6$", "bcrypt": "$2b$", "yescrypt": "$y$"}
BCRYPT_COST = 12


def hash_password(
    password: str, method: str = "sha512", salt: str | None = None, rounds: int | None = None
) -> str:
    """A crypt(3) hash of ``password``. SHA-512 never needs the system; bcrypt and yescrypt
    use its libcrypt (present wherever ``passwd`` is)."""
    if not isinstance(password, str):
        raise ArmswarmError("hash_password: the password must be a string")
    if method not in METHODS:
        raise ArmswarmError(f"hash_password: method {method!r} is not one of {sorted(METHODS)}")
    if method == "sha512":
        return sha512_crypt(password, gen_salt() if salt is None else salt, rounds)
    if method == "bcrypt" and not rounds:
        # libxcrypt's own default cost for bcrypt is 5 (2^5 rounds): too cheap for a login;
        # 12 is what Python's crypt.mksalt and htpasswd -B chose
        rounds = BCRYPT_COST
    setting = libcrypt_gensalt(METHODS[method], rounds or 0) if salt is None else salt
    hashed = libcrypt(password, setting) if setting else None
    if not hashed or not hashed.startswith(METHODS[method]):
        raise ArmswarmError(f"this system's libcrypt cannot make {method} hashes")
    return hashed


def verify(password: str, hashed: str) -> bool:
    """Whether ``password`` matches the crypt(3) ``hashed`` (constant-time comparison)."""
    if not isinstance(password, str) or not isinstance(hashed, str) or not hashed.startswith("$"):
        return False
    if hashed.startswith("$6$"):
        try:
            salt, rounds = _parse_sha512(hashed)
        except ArmswarmError:
            return False
        candidate = sha512_crypt(password, salt, rounds)
    else:
        candidate = libcrypt(password, hashed)
        if candidate is None:
            return False
    return hmac.compare_digest(candidate.encode(), hashed.encode())
