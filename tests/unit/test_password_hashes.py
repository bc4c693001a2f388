"""crypt(3) hashes without Python's crypt module: the specification's vectors, the system's tools.

The vectors are those published with Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512"
(they also check the salt truncation and the rounds clamping). ``openssl passwd -6`` and
``mkpasswd`` are independent implementations; the system's libcrypt is the one ``login`` uses.
"""

import shutil
import subprocess
import sys

import pytest
from armswarm_core import ArmswarmError
from armswarm_core.common import password_hashes

pytestmark = pytest.mark.unit

SPEC_VECTORS = [
    (
        "$6$saltstring",
        "Hello world!",
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdF"
        "CoEOfaS35inz1",
    ),
    (
        "$6$rounds=10000$saltstringsaltstring",
        "Hello world!",
        "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8v"
        "OuZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
    ),
    (
        "$6$rounds=5000$toolongsaltstring",
        "This is just a test",
        "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1"
        "yxdYcz/e1JSbq3y6JMxxl8audkUEm0",
    ),
    (
        "$6$rounds=1400$anotherlongsaltstring",
        "a very much longer text to encrypt.  This one even stretches over morethan one line.",
        "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x"
        "9t0oSwbtEW7o7UmJEiDwGqd8p4ur1",
    ),
    (
        "$6$rounds=10$roundstoolow",
        "the minimum number is still observed",
        "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4"
        "ZEQpyUNGc0dqbpBYYBaHHrsX.",
    ),
]


def _split(setting):
    parts = setting.split("$")
    if parts[2].startswith("rounds="):
        return parts[3], int(parts[2][len("rounds=") :])
    return parts[2], None


@pytest.mark.parametrize(("setting", "password", "expected"), SPEC_VECTORS)
def test_specification_vectors(setting, password, expected):
    salt, rounds = _split(setting)
    assert password_hashes.sha512_crypt(password, salt, rounds) == expected
    assert password_hashes.verify(password, expected)
    assert not password_hashes.verify(password + "x", expected)


UGLY = ["", "ü€ñ ☃ pässwörd", "a" * 300, "with:colon$and\\back", " leading and trailing "]


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl is not installed")
@pytest.mark.parametrize("password", UGLY)
def test_matches_openssl_passwd_6(password):
    salt = password_hashes.gen_salt()
    ours = password_hashes.sha512_crypt(password, salt)
    theirs = (
        subprocess.run(
            ["openssl", "passwd", "-6", "-salt", salt, "-stdin"],
            input=password.encode() + b"\n",
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )
    if password.strip() != password or not password or len(password.encode()) > 256:
        # openssl -stdin reads one line of at most 256 bytes: compare what it can be given.
        pytest.skip("openssl passwd -stdin cannot take this password unchanged")
    assert ours == theirs


@pytest.mark.skipif(not shutil.which("mkpasswd"), reason="mkpasswd (whois) is not installed")
@pytest.mark.parametrize("password", UGLY[1:])
def test_matches_mkpasswd(password):
    salt = password_hashes.gen_salt()
    theirs = (
        subprocess.run(
            ["mkpasswd", "-m", "sha-512", "-S", salt, "-R", "7000", "--stdin"],
            input=password.encode(),
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )
    assert password_hashes.sha512_crypt(password, salt, 7000) == theirs


@pytest.mark.parametrize("password", UGLY)
@pytest.mark.parametrize("rounds", [None, 1000, 6543])
def test_matches_the_system_libcrypt(password, rounds):
    """libcrypt (through ctypes, not our code) agrees with the pure-Python path."""
    salt = password_hashes.gen_salt(12)
    ours = password_hashes.sha512_crypt(password, salt, rounds)
    setting = f"$6$rounds={rounds}${salt}" if rounds else f"$6${salt}"
    theirs = password_hashes.libcrypt(password, setting)
    if theirs is None:
        pytest.skip("this system has no libcrypt")
    assert ours == theirs
    assert password_hashes.verify(password, theirs)


def test_random_salts_differ_and_verify():
    first = password_hashes.hash_password("s3cret")
    second = password_hashes.hash_password("s3cret")
    assert first != second
    assert first.startswith("$6$") and len(first.split("$")[2]) == 16
    assert password_hashes.verify("s3cret", first) and password_hashes.verify("s3cret", second)
    assert not password_hashes.verify("S3cret", first)


def test_bcrypt_through_libcrypt_round_trips():
    try:
        hashed = password_hashes.hash_password("pw1", "bcrypt", rounds=5)
    except ArmswarmError:
        pytest.skip("this system's libcrypt has no bcrypt")
    assert hashed.startswith("$2b$05$")
    assert password_hashes.hash_password("pw1", "bcrypt", salt=hashed) == hashed
    # without rounds: cost 12, not libxcrypt's default of 5
    default = password_hashes.hash_password("pw1", "bcrypt")
    assert default.startswith("$2b$12$") and password_hashes.verify("pw1", default)
    assert password_hashes.verify("pw1", hashed)
    assert not password_hashes.verify("pw2", hashed)


def test_no_crypt_module_needed(monkeypatch):
    """With ``crypt`` unimportable (Python 3.13), hashing still works."""
    monkeypatch.setitem(sys.modules, "crypt", None)
    hashed = password_hashes.hash_password("pw", salt="abc")
    assert hashed == password_hashes.sha512_crypt("pw", "abc")
    with pytest.raises(ImportError):
        import crypt  # noqa: F401, PLC0415


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"password": 1234}, "must be a string"),
        ({"password": "Tr0ub4dor&3", "method": "md5"}, "method 'md5'"),
        ({"password": "Tr0ub4dor&3", "salt": "a$b"}, "salt"),
        ({"password": "Tr0ub4dor&3", "rounds": "5000"}, "rounds"),
        ({"password": "Tr0ub4dor&3", "rounds": True}, "rounds"),
    ],
)
def test_bad_input_is_named_and_never_echoes_the_password(kwargs, message):
    with pytest.raises(ArmswarmError, match=message) as err:
        password_hashes.hash_password(**kwargs)
    assert "Tr0ub4dor" not in str(err.value)


@pytest.mark.parametrize("hashed", ["", "*", "!", "$6$", "$6$rounds=x$s$h", "plain", None])
def test_verify_refuses_what_is_no_hash(hashed):
    assert password_hashes.verify("", hashed) is False
