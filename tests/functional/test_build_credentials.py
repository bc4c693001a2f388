"""A build script's registry login: where the docker CLI finds it, and never in the context
the script may send to ``docker build``."""

import os
import stat
import tempfile
from pathlib import Path

import pytest
from armswarm_core.build import build_job

pytestmark = pytest.mark.functional

# The script does what a real one does with its directory (``docker build .``): anything in
# the context would reach the build. It fails when the login is in the context, or absent.
SCRIPT = """#!/bin/sh
set -e
context=$(cd .. && pwd)
found=$(grep -rl --exclude=build.sh "YnVpbGRlcjpzM2NyM3Q" "$context" || true)
[ -z "$found" ] || { echo "credentials in the context: $found"; exit 3; }
case "$DOCKER_CONFIG" in "$context"*) echo "DOCKER_CONFIG inside the context"; exit 4;; esac
stat -c %a "$DOCKER_CONFIG/config.json" > "$OUT/mode"
cat "$DOCKER_CONFIG/config.json" > "$OUT/config"
echo "$DOCKER_CONFIG" > "$OUT/dir"
"""


class _Images:
    def get(self, ref):  # the script "made" the image; the SDK's answer is all build_script reads
        return ref


class _Client:
    images = _Images()


def test_script_login_is_outside_the_build_context(tmp_path, monkeypatch):
    workdir = tmp_path / "context"
    (workdir / "app").mkdir(parents=True)
    script = workdir / "app" / "build.sh"
    script.write_text(SCRIPT)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("OUT", str(out))
    # the login's temporary directory goes here, where the test can see that it is gone
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    job = build_job.Job(
        _Client(),
        "registry.lan:5000/app:1",
        registry="registry.lan:5000",
        auth={"username": "builder", "password": "s3cr3t"},  # base64 "YnVpbGRlcjpzM2NyM3Q="
    )
    job.build_script(workdir, "app/build.sh", timeout=30)
    assert (out / "mode").read_text().strip() == "600"
    assert '"registry.lan:5000"' in (out / "config").read_text()
    # nothing left behind in the context either
    assert not [p for p in workdir.rglob("*") if p.name == "config.json"]
    assert sorted(os.listdir(workdir)) == ["app"]
    login_dir = Path((out / "dir").read_text().strip())
    assert login_dir.parent == temp and login_dir.name.startswith("armswarm-docker-")
    assert os.listdir(temp) == []  # the login's directory is removed after the script
