"""Pure logic of pointing apt at a Debian mirror (armswarm_core.node.apt_sources): the plan
over each real image's files (tests/functional/fixtures/apt) is stable once applied, and the
edge cases of both formats. apt itself is the witness in the functional tests."""

from pathlib import Path

import pytest
from armswarm_core import ArmswarmError
from armswarm_core.node import apt_sources

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[1] / "functional" / "fixtures" / "apt"
MIRROR = "http://mirror.lan/debian"
MANAGED = "/etc/apt/sources.list"
COMPONENTS = "main contrib non-free-firmware"


def image_files(image):
    root = FIXTURES / image / "etc/apt"
    out = {}
    for path in [root / "sources.list", *sorted((root / "sources.list.d").glob("*"))]:
        if path.is_file() and path.name.endswith((".list", ".sources")):
            out["/etc/apt/" + str(path.relative_to(root))] = path.read_text()
    return out


def applied(files, security=None, codename="bookworm"):
    plan = apt_sources.plan(files, MANAGED, MIRROR, security, codename, COMPONENTS)
    return {**files, **plan["write"]}, plan


@pytest.mark.parametrize(
    "image",
    sorted(
        p.name
        for p in FIXTURES.iterdir()
        if p.is_dir() and "raspbian" not in p.name and "noble" not in p.name
    ),
)
@pytest.mark.parametrize("security", [None, "http://mirror.lan/debian-security"])
def test_a_plan_applied_is_stable(image, security):
    codename = "trixie" if "trixie" in image else "bookworm"
    files = image_files(image)
    once, plan = applied(files, security, codename)
    assert MANAGED in plan["write"]
    twice, again = applied(once, security, codename)
    assert again["write"] == {} and twice == once


def test_the_security_suite_stays_in_a_paragraph_without_a_security_mirror():
    files = {
        "/etc/apt/sources.list.d/debian.sources": (
            "Types: deb\nURIs: http://deb.debian.org/debian\n"
            "Suites: bookworm\n  bookworm-security bookworm-updates\nComponents: main\n"
        )
    }
    out, plan = applied(files)
    text = out["/etc/apt/sources.list.d/debian.sources"]
    assert "Suites: bookworm-security\nComponents: main\n" in text and "Enabled" not in text
    assert plan["disabled"] == {
        "/etc/apt/sources.list.d/debian.sources": [
            "http://deb.debian.org/debian bookworm bookworm-updates"
        ]
    }
    out, _ = applied(files, security="http://mirror.lan/debian-security")
    assert out["/etc/apt/sources.list.d/debian.sources"].endswith("Enabled: no\n")


def test_enabled_yes_becomes_no_and_a_disabled_paragraph_is_left_alone():
    text = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nEnabled: yes\n"
    off = "Types: deb\nURIs: http://ftp.de.debian.org/debian\nSuites: bookworm\nEnabled: no\n"
    files = {"/etc/apt/sources.list.d/debian.sources": text + "\n" + off}
    out, plan = applied(files)
    new = out["/etc/apt/sources.list.d/debian.sources"]
    assert new.count("Enabled: no") == 2 and "Enabled: yes" not in new
    assert plan["disabled"]["/etc/apt/sources.list.d/debian.sources"] == [
        "http://deb.debian.org/debian bookworm"
    ]


def test_one_line_entries_elsewhere_are_commented_out_and_others_kept():
    files = {
        MANAGED: "deb http://deb.debian.org/debian bookworm main # the image's\n",
        "/etc/apt/sources.list.d/old.list": (
            "deb http://mirror.lan/debian bookworm main\n"
            "deb [signed-by=/k.gpg] https://download.docker.com/linux/debian bookworm stable\n"
        ),
    }
    out, plan = applied(files)
    old = out["/etc/apt/sources.list.d/old.list"].splitlines()
    assert old[0] == apt_sources.MARK + "deb http://mirror.lan/debian bookworm main"
    assert old[1].startswith("deb [signed-by=/k.gpg] https://download.docker.com")
    assert plan["kept"] == []  # the managed file held only Debian
    assert "[signed-by" not in out[MANAGED]  # Docker's key is not Debian's


def test_a_ppa_built_for_ubuntu_may_stay_but_ubuntu_itself_is_refused():
    ppa = {MANAGED: "deb http://ppa.launchpad.net/ansible/ansible/ubuntu jammy main\n"}
    out, plan = applied(ppa)
    assert plan["kept"] == ["deb http://ppa.launchpad.net/ansible/ansible/ubuntu jammy main"]
    ubuntu = {MANAGED: "deb http://ports.ubuntu.com/ubuntu-ports noble main universe\n"}
    with pytest.raises(ArmswarmError, match="Ubuntu"):
        apt_sources.plan(ubuntu, MANAGED, MIRROR, None, "noble", COMPONENTS)


def test_a_raspbian_mirror_of_another_name_is_refused():
    files = {
        MANAGED: "deb http://mirror.ox.ac.uk/sites/archive.raspbian.org/archive/raspbian"
        " bookworm main contrib non-free rpi\n"
    }
    with pytest.raises(ArmswarmError, match="Raspbian"):
        applied(files)


def test_mixed_uris_and_broken_paragraphs_are_refused_naming_the_file():
    mixed = {
        "/etc/apt/sources.list.d/x.sources": (
            "Types: deb\nURIs: http://deb.debian.org/debian http://apt.example/debian2\n"
            "Suites: bookworm\nComponents: main\n"
        )
    }
    with pytest.raises(ArmswarmError, match="x.sources.*split it"):
        applied(mixed)
    broken = {"/etc/apt/sources.list.d/y.sources": "Types: deb\nthis is no field\n"}
    with pytest.raises(ArmswarmError, match="y.sources: line 2"):
        applied(broken)


def test_backports_and_deb_src_follow_the_image():
    files = {
        MANAGED: "deb http://deb.debian.org/debian bookworm main\n"
        "deb-src http://deb.debian.org/debian bookworm main\n"
        "deb http://deb.debian.org/debian bookworm-backports main\n"
    }
    out, _ = applied(files)
    lines = out[MANAGED].splitlines()[1:]
    assert lines == [
        f"{kind} {MIRROR} {suite} {COMPONENTS}"
        for kind in ("deb", "deb-src")
        for suite in ("bookworm", "bookworm-updates", "bookworm-backports")
    ]


@pytest.mark.parametrize("codename", ["", "Bookworm", "bookworm\nx", None])
def test_a_bad_codename_is_refused(codename):
    with pytest.raises(ArmswarmError, match="codename"):
        apt_sources.plan({}, MANAGED, MIRROR, None, codename, COMPONENTS)


@pytest.mark.parametrize(
    ("mirror", "security", "components", "word"),
    [
        ("http://mirror.lan/deb ian", None, COMPONENTS, "debian"),
        ("[trusted=yes] http://mirror.lan/debian", None, COMPONENTS, "debian"),
        (MIRROR, "http://mirror.lan/debian-security#x", COMPONENTS, "security"),
        (MIRROR, None, ["main contrib"], "components"),
        (MIRROR, None, "", "components"),
    ],
)
def test_a_mirror_or_component_an_apt_line_cannot_hold_is_refused(
    mirror, security, components, word
):
    with pytest.raises(ArmswarmError, match=word):
        apt_sources.plan({}, MANAGED, mirror, security, "bookworm", components)


def test_an_ipv6_mirror_is_written_as_given():
    mirror = "http://[fd00::1]:3142/debian"
    out = apt_sources.plan({}, MANAGED, mirror, None, "bookworm", COMPONENTS)
    assert f"deb {mirror} bookworm " in out["write"][MANAGED]


@pytest.mark.parametrize(
    ("uri", "want"),
    [
        ("http://u:Pw-9x@mirror.lan/debian", "http://…@mirror.lan/debian"),
        ("http://mirror.lan/debian", "http://mirror.lan/debian"),
        ("http://[fd00::1]:3142/debian", "http://[fd00::1]:3142/debian"),
    ],
)
def test_a_password_in_a_mirror_url_is_not_shown(uri, want):
    assert apt_sources.shown(uri) == want
