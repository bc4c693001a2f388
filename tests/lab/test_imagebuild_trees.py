"""An image tree shaped like the HC1 author's (jit06/docker-images) built on the lab: a base
made by a script (``docker import``), children ``FROM <registry>/armv7h/archlinux`` spelled
without the port, through a tree-wide build argument and through a symlinked alias, a CRLF
Dockerfile, a context above the image directory and a variant. Every child must be built on
this run's base."""

import json
import shutil
from pathlib import Path

import pytest
import requests

from armswarm import paths

pytestmark = pytest.mark.lab

BASE_SCRIPT = paths.tree_root() / "salt/imagebuild/images/base/build.sh"


def _layers(lab, repo, ref):
    accept = "application/vnd.docker.distribution.manifest.v2+json"
    response = requests.get(
        f"https://{lab.registry}/v2/{repo}/manifests/{ref}",
        headers={"Accept": accept},
        auth=lab.registry_auth,
        verify=str(lab.ca_file),
        timeout=10,
    )
    response.raise_for_status()
    return [layer["digest"] for layer in response.json()["layers"]]


def _hc1_like_tree(root: Path, registry: str) -> Path:
    host = registry.rsplit(":", 1)[0]
    files = {
        "tree.yaml": f"build_args: {{REG: '{registry}'}}\n",
        # the HC1's platform: the whole tree inherits it
        "armv7h/archlinux/image.yaml": "timeout: 600\nplatforms: [linux/arm/v7]\n",
        # the original layout's leftover: listed as skipped, never silently an image
        "archlinux_image_builder/mkimage-arch.sh": "#!/bin/sh\nexit 1\n",
        "bozon/Dockerfile": (
            f"FROM {host}/armv7h/archlinux\r\n\r\n# config\r\nCOPY etc /etc/\r\n"
            "RUN cat /etc/bozon.conf \\\r\n  && true\r\n"
        ),
        "bozon/etc/bozon.conf": "upload=1\n",
        "nginx_naxsi/Dockerfile": (
            '# escape=\\\nARG REG\nfrom\t"${REG}/armv7h/archlinux" AS run\n'
            "run echo naxsi > /naxsi\n"
        ),
        "phpmyadmin/Dockerfile": "FROM arch\nRUN echo pma > /pma",  # no final newline
        "shared/index.html": "<h1>hc1</h1>\n",
        "apps/web/Dockerfile": "FROM nginx_naxsi\nCOPY shared/index.html /var/www/\n",
        "apps/web/Dockerfile.debug": "FROM nginx_naxsi\nRUN echo debug > /debug\n",
        "apps/web/image.yaml": "context: ../..\nvariants: {debug: Dockerfile.debug}\n",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode())
    shutil.copy2(BASE_SCRIPT, root / "armv7h/archlinux/build.sh")
    (root / "armv7h/archlinux/build.sh").chmod(0o755)
    (root / "arch").symlink_to("armv7h/archlinux")
    return root


def test_an_hc1_like_tree_builds_every_child_on_this_runs_base(lab, tmp_path):
    root = _hc1_like_tree(tmp_path / "tree", lab.registry)
    proc = lab.run_salt("salt-run", "--out=json", "imagebuild.run", f"source={root}", check=False)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    status = {item["image"]: item["status"] for item in report["images"]}
    assert status == {
        "armv7h/archlinux": "done",
        "bozon": "done",
        "nginx_naxsi": "done",
        "phpmyadmin": "done",
        "apps/web": "done",
        "apps/web-debug": "done",
    }
    tag = report["tag"]
    base = _layers(lab, "armv7h/archlinux", tag)
    for child in ("bozon", "nginx_naxsi", "phpmyadmin", "apps/web", "apps/web-debug"):
        assert _layers(lab, child, tag)[: len(base)] == base, child
    web, naxsi = _layers(lab, "apps/web", tag), _layers(lab, "nginx_naxsi", tag)
    assert web[: len(naxsi)] == naxsi and len(web) == len(naxsi) + 1
    # all built for the HC1's platform on the HC1 (node1)
    assert {(i["platform"], i["node"]) for i in report["images"]} == {("linux/arm/v7", "node1")}
