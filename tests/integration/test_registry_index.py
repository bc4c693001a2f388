"""Image indexes and retention against a real registry (Debian's distribution 2.8 binary,
plain HTTP on localhost): per-platform manifests pushed through the API, the index put over
them under a dated tag and ``latest``, read back as the registry serves it, and retention
that deletes an old run without touching what the kept index references."""

import hashlib
import json
import shutil
import socket
import subprocess
import time

import pytest
import requests
from armswarm_core.build import build_run
from armswarm_core.registry import registry_api, tag_retention

pytestmark = pytest.mark.integration

BINARY = shutil.which("docker-registry") or "/usr/bin/docker-registry"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def registry(tmp_path):
    if not shutil.which(BINARY):
        pytest.fail("docker-registry is missing: apt-get install docker-registry")
    port = _free_port()
    config = tmp_path / "config.yml"
    config.write_text(
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        "log:\n  level: error\n"
    )
    proc = subprocess.Popen([BINARY, "serve", str(config)], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if requests.get(f"{url}/v2/", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("the registry did not start")
        time.sleep(0.1)
    conf = registry_api.Settings(host=f"127.0.0.1:{port}", url=url)
    yield registry_api.Registry(conf, retries=1)
    proc.terminate()
    proc.wait(timeout=10)


def _push_image(reg, repo, tag, arch, variant, nonce) -> str:
    """An image manifest for one platform, as dockerd pushes it (config + one layer)."""
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            **({"variant": variant} if variant else {}),
            "rootfs": {"type": "layers", "diff_ids": []},
            "nonce": nonce,
        }
    ).encode()
    layer = f"{arch}{variant}{nonce}".encode()
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": registry_api.DOCKER_MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": len(config),
                "digest": reg._upload_blob(repo, config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(layer),
                    "digest": reg._upload_blob(repo, layer),
                }
            ],
        }
    ).encode()
    reg.put_manifest(repo, tag, body, registry_api.DOCKER_MANIFEST)
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _run(reg, repo, tag, nonce, nonce64=None) -> tuple:
    """What a run of a two-platform image leaves: platform tags and the index."""
    v7 = _push_image(reg, repo, tag_retention.platform_tag(tag, "linux/arm/v7"), "arm", "v7", nonce)
    arm64 = _push_image(
        reg, repo, tag_retention.platform_tag(tag, "linux/arm64"), "arm64", "", nonce64 or nonce
    )
    index = reg.put_index(repo, [tag, "latest"], {"linux/arm/v7": v7, "linux/arm64": arm64})
    return index, v7, arm64


def test_the_index_the_registry_serves_names_each_platform(registry):
    index, v7, arm64 = _run(registry, "web", "20261201", "a")
    body, media_type, digest = registry.manifest("web", "20261201")
    assert media_type == registry_api.DOCKER_LIST and digest == index
    assert registry.digest("web", "latest") == index
    served = json.loads(body)
    assert [(m["digest"], m["platform"]) for m in served["manifests"]] == [
        (v7, {"architecture": "arm", "os": "linux", "variant": "v7"}),
        (arm64, {"architecture": "arm64", "os": "linux"}),
    ]
    for entry in served["manifests"]:  # sizes as the registry has them
        assert entry["size"] == len(registry.manifest("web", entry["digest"])[0])
    assert registry.index_children("web", "20261201") == [v7, arm64]
    assert registry.index_children("web", "20261201-linux-arm64") == []  # an image manifest
    assert registry.index_children("web", "sha256:" + "0" * 64) == []  # gone


class _Quiet:
    def say(self, message):
        pass


def test_prune_drops_an_old_run_and_keeps_what_the_kept_index_holds(registry, tmp_path):
    state = tmp_path / "state"
    old_index, old_v7, shared = _run(registry, "web", "20261101", "old", "same")
    # the next run rebuilt arm64 identically (the same manifest digest), armv7 new
    new_index, new_v7, again = _run(registry, "web", "20261102", "new", "same")
    assert again == shared and new_v7 != old_v7
    slugs = ("", "-linux-arm-v7", "-linux-arm64")
    build_run.record(
        state, {"web": {run: [run + s for s in slugs] for run in ("20261101", "20261102")}}
    )
    # an index from before the ledger, whose manifests have no tags of their own: adopted
    foreign = _push_image(registry, "web", "scratchpad", "arm", "v7", "foreign")
    foreign_index = registry.put_index("web", ["20261001"], {"linux/arm/v7": foreign})
    registry.untag("web", "scratchpad")
    # someone's own tag that looks dated: never deleted
    hand = _push_image(registry, "web", "20240101", "arm64", "", "by hand")
    assert old_index != new_index

    before = build_run.prune(_Quiet(), registry, keep=1, repositories="web", state_dir=state)
    assert before["repositories"]["web"]["kept_not_made_by_armswarm"] == ["20240101", "20261001"]
    build_run.adopt(registry, state, "web", "20261001")
    result = build_run.prune(
        _Quiet(), registry, keep=1, repositories="web", dry_run=False, state_dir=state
    )
    entry = result["repositories"]["web"]
    assert sorted(entry["deleted"]) == ["20261001", "20261101", "20261101-linux-arm-v7"]
    assert entry["untagged"] == ["20261101-linux-arm64"]  # its manifest: in the kept index
    assert entry["orphans"] == [foreign]
    assert entry["kept_not_made_by_armswarm"] == ["20240101"]
    assert registry.tags("web") == sorted(
        ["20240101", "20261102", "20261102-linux-arm-v7", "20261102-linux-arm64", "latest"]
    )
    # what the registry now serves: the kept index and everything it references
    assert registry.digest("web", "latest") == new_index
    for digest in (new_index, new_v7, shared, hand):
        assert registry.digest("web", digest) == digest
    for digest in (old_index, old_v7, foreign_index, foreign):
        assert registry.digest("web", digest) is None
    assert build_run.ledger(state) == {"web": {"20261102": [f"20261102{s}" for s in sorted(slugs)]}}
