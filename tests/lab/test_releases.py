"""One swarm, two Debian releases: bookworm nodes (Docker 20.10, Python 3.11) beside trixie
nodes (Docker 26.1, Python 3.13 without ``crypt``), as a cluster in the middle of an upgrade.

Each per-node check runs on one node of each release (node1 bookworm, node4 trixie) and reads
what the node itself says (os-release, dockerd, dpkg, /etc/shadow, PAM), never the lab's spec.
"""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from armswarm.lab import image

# One node of each release (see armswarm.lab.cluster.DEFAULT_NODES).
PER_RELEASE = {"bookworm": "node1", "trixie": "node4"}
NODES = pytest.mark.parametrize("node", sorted(PER_RELEASE.values()))


def sh(lab, node, script) -> tuple[int, str]:
    return lab.exec(node, ["sh", "-c", script])


def test_each_node_runs_the_release_it_was_given_and_status_says_so(lab):
    status = {n["name"]: n for n in lab.status()["nodes"]}
    seen = set()
    for spec in lab.nodes:
        code, codename = sh(lab, spec.name, ". /etc/os-release; echo $VERSION_CODENAME")
        assert code == 0 and codename.strip() == spec.release, (spec.name, codename)
        code, engine = lab.exec(spec.name, ["docker", "version", "--format", "{{.Server.Version}}"])
        assert code == 0, engine
        code, python = lab.exec(spec.name, ["/opt/salt/bin/python", "-V"])
        want_python = image.RELEASES[spec.release]["python"]
        assert python.split()[1].startswith(want_python + "."), (spec.name, python)
        # `armswarm-lab status` shows what the node says
        assert status[spec.name]["engine"] == engine.strip()
        assert status[spec.name]["python"] == python.split()[1]
        assert spec.release in status[spec.name]["os"].lower()
        seen.add((spec.release, engine.strip().split(".")[0]))
    # Both engines in one lab: 20.10 on bookworm, 26 on trixie.
    assert {major for release, major in seen if release == "bookworm"} == {"20"}
    assert {major for release, major in seen if release == "trixie"} == {"26"}


def test_the_cli_status_table_has_os_engine_and_python(lab):

    cli = Path(sys.executable).parent / "armswarm-lab"
    proc = subprocess.run(
        [str(cli), "--name", lab.name, "--subnet", lab.subnet, "status"],
        capture_output=True,
        text=True,
        check=True,
    )
    node4 = next(line for line in proc.stdout.splitlines() if line.split()[:1] == ["node4"])
    assert "Debian GNU/Linux 13 (trixie)" in node4 and re.search(r"\b26\.1\.\d", node4)
    assert re.search(r"\b3\.13\.\d", node4)
    node1 = next(line for line in proc.stdout.splitlines() if line.split()[:1] == ["node1"])
    assert "Debian GNU/Linux 12 (bookworm)" in node1 and re.search(r"\b20\.10\.\d", node1)


def test_one_swarm_holds_both_engines(lab):
    code, out = lab.exec(
        "node1",
        ["docker", "node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.EngineVersion}}"],
    )
    assert code == 0, out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()}
    assert set(rows) == set(lab.node_names()), rows
    assert all(status == "Ready" for status, _ in rows.values()), rows
    engines = {name: version for name, (_, version) in rows.items()}
    for spec in lab.nodes:
        assert engines[spec.name].startswith("26." if spec.release == "trixie" else "20.10.")


def test_the_same_salt_runs_on_both_releases(lab):
    ret = lab.salt_json("*", "test.version", "--timeout=30")
    assert len(set(ret.values())) == 1 and sorted(ret) == lab.node_names(), ret
    code, out = lab.exec(PER_RELEASE["trixie"], ["/opt/salt/bin/python", "-c", "import crypt"])
    assert code != 0 and "No module named 'crypt'" in out


@NODES
def test_no_stray_mta_exim4_never_installed(lab, node):
    # armnode ran in `up`; the relay's MTA came first, so nothing pulled exim4 in.
    code, out = lab.exec(
        node, ["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n", "exim4*", "msmtp-mta"]
    )
    installed = {line.split()[0] for line in out.splitlines() if line.split()[1:2] == ["ii"]}
    assert "msmtp-mta" in installed, out
    assert not {p for p in installed if p.startswith("exim4")}, out
    code, out = sh(lab, node, "ls /etc/init.d/exim4 /etc/exim4 2>&1; dpkg -l | grep -c '^rc.*exim'")
    assert "No such file" in out and out.strip().endswith("0"), out
    # install_recommends is off by default: what the relay's packages recommend, as the node's
    # own apt lists it (msmtp-mta: the keyring tools; glib, which msmtp needs: the MIME
    # database), stayed out.
    code, out = sh(
        lab,
        node,
        "apt-cache depends --recommends --no-depends --no-suggests --no-conflicts --no-breaks"
        " --no-replaces --no-enhances msmtp-mta $(dpkg-query -W -f '${Package} ' 'libglib2.0-0*')",
    )
    recommends = set(re.findall(r"Recommends: (\S+)", out))
    assert {"libsecret-tools", "shared-mime-info"} <= recommends, out
    code, out = lab.exec(
        node, ["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n", *sorted(recommends)]
    )
    installed = {line.split()[0] for line in out.splitlines() if line.split()[1:2] == ["ii"]}
    assert not installed, out


@NODES
def test_password_hash_on_the_node_matches_openssl_and_logs_in(lab, node):
    """armnode.gen_password on the node (Python 3.13 has no crypt there), checked against the
    node's own openssl, set with chpasswd -e and accepted by PAM's password checker."""
    salt = "Zq8.fixedSalt"
    password = "Pässword with spaces:and$signs"
    ret = lab.salt_json(
        node, "armnode.gen_password", json.dumps(password), f"crypt_salt={salt}", "--timeout=30"
    )
    hashed = ret[node]
    code, theirs = lab.exec(node, ["openssl", "passwd", "-6", "-salt", salt, password])
    assert code == 0 and hashed == theirs.strip(), (hashed, theirs)
    # A random salt by default, and a real login check through PAM (unix_chkpwd reads the
    # password NUL-terminated on stdin, as pam_unix hands it over).
    hashed = lab.salt_json(node, "armnode.gen_password", json.dumps(password), "--timeout=30")[node]
    user = "armswarmpwtest"
    try:
        sh(lab, node, f"userdel {user} 2>/dev/null; useradd -M {user}")
        code, out = sh(lab, node, f"echo '{user}:{hashed}' | chpasswd -e")
        assert code == 0, out
        code, shadow = sh(lab, node, f"getent shadow {user} | cut -d: -f2")
        assert shadow.strip() == hashed
        good = f"printf '%s\\0' {shlex.quote(password)} | /usr/sbin/unix_chkpwd {user} nonull"
        bad = f"printf '%s\\0' 'wrong' | /usr/sbin/unix_chkpwd {user} nonull"
        assert sh(lab, node, good)[0] == 0
        assert sh(lab, node, bad)[0] != 0
    finally:
        sh(lab, node, f"userdel {user}")


@NODES
def test_daemon_json_is_valid_for_the_nodes_engine(lab, node):
    code, version = lab.exec(node, ["dockerd", "--version"])
    code, out = lab.exec(node, ["cat", "/etc/docker/daemon.json"])
    daemon = json.loads(out)
    assert daemon.get("storage-driver") == "overlay2"
    if " 20.10." in version:
        # dockerd 20.10 has no --validate: the running daemon took the file (it would not
        # start with an unknown key), and reports what it says.
        code, driver = lab.exec(node, ["docker", "info", "--format", "{{.Driver}}"])
        assert driver.strip() == "overlay2"
        return
    code, out = lab.exec(
        node, ["dockerd", "--validate", "--config-file", "/etc/docker/daemon.json"]
    )
    assert code == 0 and "configuration OK" in out, out


def test_the_summary_reads_at_a_glance(lab):
    cli = Path(sys.executable).parent / "armswarm-lab"
    proc = subprocess.run(
        [str(cli), "--name", lab.name, "--subnet", lab.subnet, "summary"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = proc.stdout.splitlines()
    # a screenful, not thousands of lines of Salt output
    assert len(lines) < 60, proc.stdout
    for section in ("swarm:", "registry:", "backups:"):
        assert section in lines, proc.stdout
    node3 = next(line for line in lines if line.startswith("node3 "))
    assert "Debian GNU/Linux 13 (trixie)" in node3 and "26.1." in node3
    swarm = lines[lines.index("swarm:") + 1 : lines.index("registry:")]
    engines = [line.split()[-1] for line in swarm[1:]]
    assert any(e.startswith("20.10.") for e in engines), swarm
    assert any(e.startswith("26.1.") for e in engines), swarm
