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


# -- files as apt reads them (apt's sourcelist.cc, tagfile.cc, strutl.cc StringToBool) --------

DEBIAN_SOURCES = "/etc/apt/sources.list.d/debian.sources"
KEY = (
    "Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n mQINBGPL0BUBEADmW5NdOOHwPIJl\n"
    " =zMvY\n -----END PGP PUBLIC KEY BLOCK-----\n"
)


def test_an_embedded_debian_key_is_refused_naming_the_file_and_the_field():
    # sources(5): Signed-By may hold the key block itself (deb822 only); a one-line
    # [signed-by=] cannot, and a guess at another keyring could let unsigned packages in.
    files = {
        DEBIAN_SOURCES: "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie\n"
        "Components: main\n" + KEY
    }
    with pytest.raises(ArmswarmError, match=r"debian.sources: the paragraph at line 1.*Signed-By"):
        applied(files, codename="trixie")


def test_an_embedded_key_in_another_archive_is_left_as_it_is():
    other = (
        "Types: deb\nURIs: https://repo.jellyfin.org/debian\nSuites: trixie\nComponents: main\n"
        + KEY
    )
    files = {MANAGED: "deb http://deb.debian.org/debian trixie main\n", "/x/jf.sources": other}
    out, plan = applied(files, codename="trixie")
    assert out["/x/jf.sources"] == other and "signed-by" not in out[MANAGED]
    assert plan["kept"] == []


def test_several_keyrings_in_signed_by_become_one_comma_list():
    # deb822 separates them by blanks, a one-line option by commas: a blank there is
    # "Malformed entry ... ([option] not assignment)" for apt.
    files = {
        DEBIAN_SOURCES: "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        "  /etc/apt/keyrings/local.gpg\n"
    }
    out, _ = applied(files)
    assert (
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg,"
        f"/etc/apt/keyrings/local.gpg] {MIRROR} bookworm " in out[MANAGED]
    )


@pytest.mark.parametrize("value", ["off", "No", "disable", "without", "0", "FALSE", ""])
def test_a_paragraph_apt_reads_as_off_is_left_alone(value):
    text = (
        f"Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\n"
        f"Enabled: {value}\n"
    )
    out, plan = applied({DEBIAN_SOURCES: text})
    assert out[DEBIAN_SOURCES] == text and plan["disabled"] == {}


def test_a_line_of_blanks_does_not_end_a_paragraph():
    # apt ends a paragraph at an empty line only: here it reads ONE paragraph, the second
    # URIs and Suites winning. The file does not say what it looks like: refused, by line.
    files = {
        DEBIAN_SOURCES: "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n"
        "Components: main\n  \nTypes: deb\nURIs: http://deb.debian.org/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"
    }
    with pytest.raises(ArmswarmError, match=r"debian.sources.*line 5 holds only blanks"):
        applied(files, security="http://mirror.lan/debian-security")
    # Blanks after the last field, or before a paragraph, change nothing.
    tail = {
        DEBIAN_SOURCES: "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n"
        "Components: main\n \t\n\n  \nTypes: deb\nURIs: http://apt.example/x\nSuites: x\n"
        "Components: main\n"
    }
    out, plan = applied(tail)
    assert plan["disabled"] == {DEBIAN_SOURCES: ["http://deb.debian.org/debian bookworm"]}
    assert out[DEBIAN_SOURCES].count("Enabled: no") == 1
    assert out[DEBIAN_SOURCES].index("Enabled: no") < out[DEBIAN_SOURCES].index("apt.example")


def test_an_indented_hash_is_part_of_the_value_not_a_comment():
    files = {
        DEBIAN_SOURCES: "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n"
        "  # bookworm-updates\nComponents: main\n"
    }
    with pytest.raises(ArmswarmError, match=r"line 4 is indented.*Suites"):
        applied(files)


def test_suites_continued_after_a_comment_line_are_all_rewritten():
    # apt drops the comment line first: bookworm-updates is still a suite of the field.
    files = {
        DEBIAN_SOURCES: "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n"
        "# the updates\n bookworm-updates\n bookworm-security\nComponents: main\n"
    }
    out, _ = applied(files)
    fields = apt_sources.stanzas(out[DEBIAN_SOURCES])[0]["fields"]
    assert fields["suites"].split() == ["bookworm-security"]


def test_field_names_are_case_insensitive():
    files = {
        DEBIAN_SOURCES: "types: deb deb-src\nuris: http://deb.debian.org/debian\n"
        "SUITES: bookworm bookworm-security\ncomponents: main\nenabled: yes\n"
    }
    out, plan = applied(files)
    assert "Suites: bookworm-security\n" in out[DEBIAN_SOURCES]
    assert f"deb-src {MIRROR} bookworm " in out[MANAGED]


def test_modernize_sources_before_the_first_update_writes_moved_from_main():
    # apt modernize-sources names the file after the archive's Origin; with no lists yet
    # there is none: moved-from-main.sources, an empty Signed-By (apt's private-sources.cc).
    moved = "/etc/apt/sources.list.d/moved-from-main.sources"
    text = (
        "# Modernized from /etc/apt/sources.list\nTypes: deb\n"
        "URIs: http://mirrors.tuna.tsinghua.edu.cn/debian/\nSuites: bookworm\n"
        "Components: main non-free-firmware\nSigned-By: \n"
    )
    out, plan = applied({MANAGED: "", moved: text})
    assert plan["disabled"] == {moved: ["http://mirrors.tuna.tsinghua.edu.cn/debian/ bookworm"]}
    assert "signed-by" not in out[MANAGED]


def test_a_password_in_an_image_s_source_is_not_shown():
    files = {
        MANAGED: "deb https://u:s3cret@repo.example/private bookworm main\n",
        "/etc/apt/sources.list.d/ubuntu.sources": (
            "Types: deb\nURIs: https://me:t0ken@ports.ubuntu.com/ubuntu-ports\n"
            "Suites: bookworm\nComponents: main\n"
        ),
    }
    with pytest.raises(ArmswarmError) as info:
        applied(files)
    assert "t0ken" not in str(info.value) and "ports.ubuntu.com" in str(info.value)
    del files["/etc/apt/sources.list.d/ubuntu.sources"]
    out, plan = applied(files)
    assert "s3cret" not in repr(plan["kept"]) and "s3cret" in out[MANAGED]  # the file keeps it


@pytest.mark.parametrize(
    "uri", ["http://u:pa/ss@mirror.lan/debian", "http://u:p?w@mirror.lan/debian"]
)
def test_a_password_apt_would_misread_is_not_shown_either(uri):
    assert "…@mirror.lan/debian" == apt_sources.shown(uri).split("//", 1)[1]


def test_a_broken_url_in_an_image_s_file_is_no_crash():
    files = {MANAGED: "deb http://[fd00::1/debian bookworm main\n"}
    _, plan = applied(files)
    assert plan["kept"] == ["deb http://[fd00::1/debian bookworm main"]


def test_a_relative_file_url_is_no_mirror():
    assert apt_sources.uri_ok("file:///srv/mirror/debian")
    assert not apt_sources.uri_ok("file:srv/mirror/debian")


def test_comment_lines_inside_a_paragraph_as_debian_s_container_images_have_them():
    # debuerreotype's debian.sources: the snapshot URL as a comment between the fields.
    text = (
        "Types: deb\n# http://snapshot.debian.org/archive/debian/20240513T000000Z\n"
        "URIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\n# http://snapshot.debian.org/archive/debian-security/20240513T000000Z\n"
        "URIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    out, plan = applied({DEBIAN_SOURCES: text})
    assert plan["disabled"] == {
        DEBIAN_SOURCES: ["http://deb.debian.org/debian bookworm bookworm-updates"]
    }
    paragraphs = apt_sources.stanzas(out[DEBIAN_SOURCES])
    assert [p["fields"].get("enabled") for p in paragraphs] == ["no", None]
    assert "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]" in out[MANAGED]
