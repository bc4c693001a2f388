"""The Debian mirror from pillar on the apt files real images ship (fixtures/apt: Armbian,
Raspberry Pi OS, DietPi, Debian 13 deb822, Debian 12 with other archives added), through
Salt's state loader: check → apply → re-apply → check. The witness is apt itself: what
``apt-get update --print-uris`` would fetch, read from the same files before and after."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from loaders import load_states
from test_armnode_render import ARCH, _arg, show_sls

FIXTURES = Path(__file__).parent / "fixtures" / "apt"
MIRROR = "http://mirror.lan/debian"
SECURITY = "http://mirror.lan/debian-security"
CODENAMES = {"bookworm": "bookworm", "trixie": "trixie", "noble": "noble"}
_INRELEASE = re.compile(r"^'(\S+)/dists/(\S+)/InRelease' ")

pytestmark = pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get")


def codename(image):
    return next(c for c in CODENAMES if c in image)


def fetches(root: Path):
    """``{(archive, suite)}`` apt would fetch Release files of, and the index kinds (Packages,
    Sources); apt's warnings fail the test (a source listed twice, conflicting Signed-By)."""
    state = root.parent / f"{root.name}-apt-state"
    (state / "lists/partial").mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            "apt-get",
            "-o", f"Dir::Etc={root}/etc/apt",
            "-o", f"Dir::State::Lists={state}/lists",
            "-o", "Debug::NoLocking=1",
            "update",
            "--print-uris",
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    noise = [line for line in done.stderr.splitlines() if line.startswith(("W:", "E:"))]
    assert not noise, noise
    releases = set()
    kinds = set()
    for line in done.stdout.splitlines():
        match = _INRELEASE.match(line)
        if match:
            releases.add((match.group(1).rstrip("/"), match.group(2)))
        kinds |= {k for k in ("Packages", "Sources") if f"_{k}" in line.split()[1]}
    return releases, kinds


def tree(root: Path):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def node(tmp_path):
    def make(image):
        root = tmp_path / image
        shutil.copytree(FIXTURES / image, root)
        states = load_states(tmp_path, grains={"kernel": "Linux", "oscodename": codename(image)})
        return root, states

    return make


def debian(release, archives):
    return {(uri, suite) for uri, suite in release if uri in archives}


DEB = "http://deb.debian.org/debian"
SEC = "http://security.debian.org"
HTTPS = "https://deb.debian.org/debian"
TUNA = "http://mirrors.tuna.tsinghua.edu.cn/debian"


@pytest.mark.parametrize(
    "image,security,archives",
    [
        # archives: the image's Debian archives, as its build script writes them
        ("armbian-bookworm", SECURITY, {DEB, SEC}),
        ("armbian-bookworm", None, {DEB, SEC}),
        ("armbian-trixie-china", SECURITY, {TUNA, TUNA + "-security"}),
        ("pios-trixie-arm64", None, {DEB, DEB + "-security"}),
        ("pios-bookworm-arm64", SECURITY, {DEB, DEB + "-security"}),
        ("dietpi-bookworm", None, {HTTPS, HTTPS + "-security"}),
        ("debian-trixie-modernized", SECURITY, {DEB, SEC + "/debian-security"}),
        ("debian-bookworm-docker", None, {DEB}),
        ("dietpi-trixie-rpi", SECURITY, {HTTPS, HTTPS + "-security"}),
        # apt modernize-sources before the first update: moved-from-main.sources
        ("debian-trixie-moved", SECURITY, {TUNA, TUNA + "-security"}),
    ],
)
def test_apt_takes_debian_from_the_mirror(node, image, security, archives):
    root, states = node(image)
    before, kinds_before = fetches(root)
    suite = codename(image)
    debian_hosts = {u for u, _ in before if u in archives}
    assert debian_hosts == archives  # the image asks Debian there, not at the mirror
    kwargs = {"name": str(root / "etc/apt"), "debian": MIRROR, "codename": suite}
    if security:
        kwargs["security"] = security
    results = []
    for test in (True, False, False, True):
        states.opts["test"] = test
        results.append(states["armnode.apt_mirror"](**kwargs))
    predicted, applied, again, check = results
    assert predicted["result"] is None and predicted["changes"], predicted
    assert applied["result"] is True and applied["changes"] == predicted["changes"], applied
    for ret in (again, check):
        assert ret["result"] is True and ret["changes"] == {}, ret
    after, kinds_after = fetches(root)
    # Other archives (the vendor's, Docker's, a PPA) exactly as before.
    others = {r for r in before if r[0] not in debian_hosts}
    assert {r for r in after if r[0] not in debian_hosts | {MIRROR, SECURITY}} == others
    mirrored = {f"{suite}", f"{suite}-updates", f"{suite}-backports"}
    # Every Debian suite the image had is still fetched; the mirrored ones from the mirror.
    for uri, s in debian(before, debian_hosts):
        if s in mirrored:
            assert (MIRROR, s) in after, (s, after)
        elif s == f"{suite}-security" and security:
            assert (SECURITY, s) in after, after
        else:
            assert (uri, s) in after, (uri, s, after)  # security without a mirror stays
    assert not {r for r in after if r[0] in debian_hosts and r[1] in mirrored}, after
    if security:
        assert not {r for r in after if r[0] in debian_hosts}, after
    assert kinds_after == kinds_before  # deb-src kept where the image had it
    # A second run of the whole thing from scratch predicts nothing: the files are stable.
    assert (root / "etc/apt/sources.list").read_text().startswith("# Managed by Salt")


@pytest.mark.parametrize(
    "image,what",
    [
        ("raspbian-bookworm", "Raspbian"),
        ("raspbian-trixie", "Raspbian"),
        ("armbian-noble", "Ubuntu"),
    ],
)
def test_a_debian_mirror_never_replaces_another_distribution(node, image, what):
    root, states = node(image)
    files = tree(root)
    for test in (True, False):
        states.opts["test"] = test
        ret = states["armnode.apt_mirror"](
            name=str(root / "etc/apt"), debian=MIRROR, codename=codename(image)
        )
        assert ret["result"] is False and ret["changes"] == {}, ret
        assert what in ret["comment"] and "armnode:mirrors:debian" in ret["comment"], ret
    assert tree(root) == files  # nothing written


def test_bad_arguments_change_nothing(node):
    root, states = node("armbian-bookworm")
    files = tree(root)
    states.opts["test"] = False
    for kwargs, word in (
        ({"debian": [MIRROR]}, "debian"),
        ({"debian": MIRROR, "security": True}, "security"),
        ({"debian": MIRROR, "components": {"main": 1}}, "components"),
        ({"debian": MIRROR, "managed": "/etc/apt/mirror.txt"}, "managed"),
        ({"debian": MIRROR, "codename": "Bookworm 12"}, "codename"),
        ({"debian": MIRROR + " bookworm main"}, "debian"),
        ({"debian": MIRROR, "components": ["main contrib"]}, "components"),
    ):
        ret = states["armnode.apt_mirror"](name=str(root / "etc/apt"), **kwargs)
        assert ret["result"] is False and word in ret["comment"], (kwargs, ret)
    assert tree(root) == files


def test_arch_linux_arm_mirrorlist_keeps_pacman_s_placeholders(tmp_path):
    # /etc/pacman.d/mirrorlist as Arch Linux ARM ships it: Server = http://mirror.archlinuxarm
    # .org/$arch/$repo; $arch and $repo stay literal for pacman. A URL copied from there is
    # used whole, a base URL (with or without its final /) gets /$arch/$repo once.
    urls = [
        "http://mirror.lan/archlinuxarm/",
        "http://de.mirror.archlinuxarm.org/$arch/$repo",
        "http://mirror.lan/alarm",
    ]
    high = show_sls(tmp_path, ARCH, pillar={"armnode": {"mirrors": {"arch": urls}}})
    contents = _arg(high["armnode-mirrors-managed"], "file", "contents")
    assert contents.splitlines() == [
        "# Managed by Salt (armnode)",
        "Server = http://mirror.lan/archlinuxarm/$arch/$repo",
        "Server = http://de.mirror.archlinuxarm.org/$arch/$repo",
        "Server = http://mirror.lan/alarm/$arch/$repo",
    ]
