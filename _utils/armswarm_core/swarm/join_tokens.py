"""Seal a secret for one minion: only the holder of that minion's private key can open it.

Swarm join tokens travel from a manager to a joiner through the Salt master (runner → job
returns → job cache → events). Sealed with the joiner's minion public key (RSA-OAEP wrapping an
AES-256-GCM key), what travels is ciphertext; the plaintext exists only on the manager and on
the joiner. The master already holds every minion's public key (``pki_dir/minions/<id>``).

A sealed value is bound to its recipient's minion id (authenticated data of the AES-GCM
seal), which stops a value sent to the wrong minion by mistake from opening there. It is no
protection between boards cloned from one image that share a minion key: the id is not secret,
and root on either board can open what was sealed for the other. So nothing is sealed for a
minion whose accepted key another minion shares (:func:`shared_keys`).
"""

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from armswarm_core import ArmswarmError

PREFIX = "armswarm-sealed-v2"  # v2: bound to the recipient's minion id
MASTER = "salt-master"  # the recipient name of values sealed for the master's key
_OAEP = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def is_sealed(value) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX + ":")


def _pem(public_key: str | bytes) -> bytes:
    """PEM as given, or re-armoured from its one-line base64 body (CLI arguments are YAML, and
    a PEM's ``-----`` lines do not survive YAML)."""
    if isinstance(public_key, bytes):
        public_key = public_key.decode()
    public_key = public_key.strip()
    if "BEGIN" not in public_key:
        body = "".join(public_key.split())
        lines = [body[i : i + 64] for i in range(0, len(body), 64)]
        public_key = "\n".join(["-----BEGIN PUBLIC KEY-----", *lines, "-----END PUBLIC KEY-----"])
    return public_key.encode()


def _aad(recipient: str) -> bytes:
    if not isinstance(recipient, str) or not recipient:
        raise ArmswarmError("a sealed value needs its recipient's minion id")
    return f"{PREFIX}|{recipient}".encode()


def seal(secret: str, public_key_pem: str | bytes, recipient: str) -> str:
    """Encrypt ``secret`` for minion ``recipient``, the owner of the RSA public key
    ``public_key_pem`` (PEM, or the PEM's base64 body on one line)."""
    aad = _aad(recipient)
    public_key_pem = _pem(public_key_pem)
    try:
        public_key = serialization.load_pem_public_key(public_key_pem)
    except ValueError as exc:
        raise ArmswarmError(f"not a PEM public key: {exc}") from exc
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ArmswarmError("sealing needs an RSA public key (a Salt minion key)")
    key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(12)
    ciphertext = AESGCM(key).encrypt(nonce, secret.encode(), aad)
    wrapped = public_key.encrypt(key, _OAEP)
    return f"{PREFIX}:{_b64(wrapped)}:{_b64(nonce + ciphertext)}"


def unseal(blob: str, private_key_pem: str | bytes, recipient: str) -> str:
    """Open a value made by :func:`seal` with the matching private key, as minion
    ``recipient`` (a value sealed for another minion id does not open, even with the key)."""
    aad = _aad(recipient)
    if isinstance(blob, str) and blob.startswith("armswarm-sealed-v1:"):
        raise ArmswarmError("a sealed value of an older armswarm (v1): ask for a new one")
    if not is_sealed(blob):
        raise ArmswarmError("not a sealed value")
    if isinstance(private_key_pem, str):
        private_key_pem = private_key_pem.encode()
    try:
        _, wrapped, body = blob.split(":")
        private_key = serialization.load_pem_private_key(private_key_pem, password=None)
        key = private_key.decrypt(base64.urlsafe_b64decode(wrapped), _OAEP)
        raw = base64.urlsafe_b64decode(body)
        return AESGCM(key).decrypt(raw[:12], raw[12:], aad).decode()
    except (ValueError, InvalidTag) as exc:
        # Never echo the blob: a wrong recipient is the usual cause.
        raise ArmswarmError("cannot open the sealed value (sealed for another minion?)") from exc


def shared_keys(keys: dict, ids) -> dict:
    """``{minion: [other minions with the same public key]}`` for those of ``ids`` whose key
    (``keys``: every accepted minion → its PEM, as the master stores them) is not their own."""
    by_key: dict = {}
    for minion, pem in keys.items():
        by_key.setdefault("".join(str(pem).split()), []).append(minion)
    out = {}
    for minion in ids:
        if minion not in keys:
            continue
        others = sorted(m for m in by_key["".join(str(keys[minion]).split())] if m != minion)
        if others:
            out[minion] = others
    return out
