"""Multi-platform image builds on the lab: a tree the project has not seen, whose base is a
real armhf/arm64 root (Debian's static busybox, ``FROM scratch`` + ``ADD``), built for
linux/arm/v7 on the HC1 and linux/arm64 on the arm64 boards, under one tag per image.

What the registry says is compared with what was asked: the index's platform entries, each
platform's image config, and a file that a child's ``RUN`` wrote (``uname -m`` as the ARM
code saw it under binfmt emulation). A script that imports an x86-recorded root for arm64
must fail its platform check and push nothing. Retention then drops an older run, and no
manifest the kept index references goes."""

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest
import requests
from helpers import DEBIAN_PLATFORM_ARCH, arm_rootfs

pytestmark = pytest.mark.lab

V7, ARM64 = "linux/arm/v7", "linux/arm64"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = ", ".join(
    (
        LIST,
        MANIFEST,
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
    )
)


@pytest.fixture(scope="module")
def binfmt():
    """qemu's arm and aarch64 handlers in the kernel (the lab's ``up`` registers them; when
    it has not, this registers them from qemu-user-static's binfmt.d files and removes only
    those afterwards)."""
    if not (BINFMT / "status").exists():
        pytest.fail("binfmt_misc is not mounted: the lab registers the qemu handlers")
    mine = []
    for name in ("qemu-arm", "qemu-aarch64"):
        if not (BINFMT / name).exists():
            conf = Path(f"/usr/lib/binfmt.d/{name}.conf")
            if not conf.is_file():
                pytest.fail(f"{conf} is missing: apt-get install qemu-user-static")
            (BINFMT / "register").write_text(conf.read_text().strip())
            mine.append(name)
        assert (BINFMT / name).read_text().startswith("enabled"), name
        # F: the interpreter is opened now, so it also works inside containers
        flags = next(
            (
                line.split(":", 1)[1]
                for line in (BINFMT / name).read_text().splitlines()
                if line.startswith("flags:")
            ),
            "",
        )
        assert "F" in flags, (name, flags)
    yield
    for name in mine:
        (BINFMT / name).write_text("-1")


def _get(lab, path, accept=ACCEPT):
    response = requests.get(
        f"https://{lab.registry}/v2/{path}",
        headers={"Accept": accept},
        auth=lab.registry_auth,
        verify=str(lab.ca_file),
        timeout=30,
    )
    return response


def _manifest(lab, repo, ref):
    response = _get(lab, f"{repo}/manifests/{ref}")
    response.raise_for_status()
    return response.json(), response.headers.get("Docker-Content-Digest")


def _config(lab, repo, manifest):
    response = _get(lab, f"{repo}/blobs/{manifest['config']['digest']}", accept="*/*")
    response.raise_for_status()
    return response.json()


def _file_in_top_layer(lab, repo, manifest, path):
    blob = _get(lab, f"{repo}/blobs/{manifest['layers'][-1]['digest']}", accept="*/*")
    blob.raise_for_status()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob.content))) as tar:
        return tar.extractfile(path).read().decode().strip()


def _tree(root: Path) -> Path:
    rootfs = {f"rootfs-{arch}.tar": arm_rootfs(deb) for deb, arch in DEBIAN_PLATFORM_ARCH.items()}
    files = {
        # one Dockerfile for every platform: TARGETARCH + TARGETVARIANT pick the root
        # (the classic builder needs an ADD or COPY before the first ARG on scratch)
        "base/README": "a root of Debian's static busybox\n",
        "base/Dockerfile": (
            "FROM scratch\nCOPY README /\nARG TARGETARCH\nARG TARGETVARIANT\n"
            'ADD rootfs-${TARGETARCH}${TARGETVARIANT}.tar /\nCMD ["/bin/sh"]\n'
        ),
        "child/Dockerfile": (
            "FROM base\nARG TARGETPLATFORM\nARG BUILDPLATFORM\n"
            'RUN echo "$(uname -m) $TARGETPLATFORM $BUILDPLATFORM" > /built-on\n'
        ),
        "only64/Dockerfile": "FROM base\nRUN uname -m > /built-on\n",
        "only64/image.yaml": "platforms: [linux/arm64]\n",
        # a script build gets the platform in its environment
        "scripted/build.sh": (
            "#!/bin/sh\nset -eu\n"
            'printf "FROM scratch\\nADD rootfs-%s%s.tar /\\n" "$TARGETARCH" "$TARGETVARIANT" '
            "> Dockerfile.gen\n"
            'docker build -q --platform "$TARGETPLATFORM" -f Dockerfile.gen '
            '-t "$ARMSWARM_IMAGE" .\n'
        ),
        # docker import records the engine's amd64 whatever the root is: the check refuses it
        "imported/build.sh": (
            '#!/bin/sh\nset -eu\ndocker import rootfs-arm64.tar "$ARMSWARM_IMAGE"\n'
        ),
        "imported/image.yaml": "platforms: [linux/arm64]\n",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if rel.endswith(".sh"):
            path.chmod(0o755)
    for image in ("base", "scripted", "imported"):
        for name, data in rootfs.items():
            (root / image / name).write_bytes(data)
    return root


def _run(lab, root):
    proc = lab.run_salt("salt-run", "--out=json", "imagebuild.run", f"source={root}", check=False)
    return proc, json.loads(proc.stdout)


@pytest.fixture(scope="module")
def built(lab, binfmt, tmp_path_factory):
    root = _tree(tmp_path_factory.mktemp("platforms") / "tree")
    plan = lab.salt_json("imagebuild.plan", f"source={root}", tool="salt-run")
    proc, report = _run(lab, root)
    return root, plan, proc, report


def test_the_plan_shows_each_images_platforms_and_their_nodes(lab, built):
    _, plan, _, _ = built
    # the lab's boards: node1 an HC1 (armv7), the others arm64
    assert plan["node_platforms"] == {
        "node1": V7,
        "node2": ARM64,
        "node3": ARM64,
        "node4": ARM64,
        "node5": ARM64,
    }
    assert plan["images"]["base"]["platforms"] == {
        V7: ["node1"],
        ARM64: ["node2", "node3", "node4", "node5"],
    }
    assert list(plan["images"]["only64"]["platforms"]) == [ARM64]
    assert plan["lower_bound_seconds"] > 0


def test_each_platform_builds_on_its_boards_into_one_index_per_tag(lab, built):
    _, _, proc, report = built
    jobs = {item["job"]: item for item in report["images"]}
    status = {k: v["status"] for k, v in jobs.items()}
    assert status == {
        "base@linux/arm/v7": "done",
        "base@linux/arm64": "done",
        "child@linux/arm/v7": "done",
        "child@linux/arm64": "done",
        "only64": "done",
        "scripted@linux/arm/v7": "done",
        "scripted@linux/arm64": "done",
        "imported": "failed",
    }, proc.stdout + proc.stderr
    for key, item in jobs.items():
        expected_nodes = (
            {"node1"} if item["platform"] == V7 else {"node2", "node3", "node4", "node5"}
        )
        assert item["node"] in expected_nodes, key
    tag = report["tag"]
    for repo in ("base", "child", "scripted"):
        index, digest = _manifest(lab, repo, tag)
        assert index["mediaType"] == LIST
        assert _manifest(lab, repo, "latest")[1] == digest  # latest: the same index
        platforms = {}
        for entry in index["manifests"]:
            manifest, _ = _manifest(lab, repo, entry["digest"])
            config = _config(lab, repo, manifest)
            # what the registry holds for each platform is that platform
            platforms[json.dumps(entry["platform"], sort_keys=True)] = (
                config["os"],
                config["architecture"],
                config.get("variant", ""),
            )
        assert platforms == {
            '{"architecture": "arm", "os": "linux", "variant": "v7"}': ("linux", "arm", "v7"),
            '{"architecture": "arm64", "os": "linux"}': ("linux", "arm64", ""),
        }, repo
        # and each platform's manifest is the one its job pushed
        by_platform = {
            "/".join(
                filter(
                    None,
                    (
                        e["platform"]["os"],
                        e["platform"]["architecture"],
                        e["platform"].get("variant"),
                    ),
                )
            ): e["digest"]
            for e in index["manifests"]
        }
        for platform in (V7, ARM64):
            assert by_platform[platform] == jobs[f"{repo}@{platform}"]["digest"]


def test_a_childs_run_step_ran_as_its_platform_on_its_parent(lab, built):
    _, _, _, report = built
    jobs = {item["job"]: item for item in report["images"]}
    for platform, machine in ((V7, "armv7l"), (ARM64, "aarch64")):
        child, _ = _manifest(lab, "child", jobs[f"child@{platform}"]["digest"])
        base, _ = _manifest(lab, "base", jobs[f"base@{platform}"]["digest"])
        # FROM this run's same-platform base: its layers first
        assert [x["digest"] for x in child["layers"][: len(base["layers"])]] == [
            x["digest"] for x in base["layers"]
        ]
        written = _file_in_top_layer(lab, "child", child, "built-on")
        # ARM code ran (binfmt): the build's uname, the platform args BuildKit would give
        assert written == f"{machine} {platform} linux/amd64", written


def test_a_single_platform_image_stays_a_single_manifest(lab, built):
    _, _, _, report = built
    manifest, digest = _manifest(lab, "only64", report["tag"])
    assert manifest["mediaType"] == MANIFEST
    assert _config(lab, "only64", manifest)["architecture"] == "arm64"
    assert _file_in_top_layer(lab, "only64", manifest, "built-on") == "aarch64"
    assert report["published"]["only64"]["kind"] == "manifest"
    assert report["published"]["only64"]["digest"] == digest


def test_an_image_of_the_wrong_platform_fails_its_check_and_is_not_pushed(lab, built):
    _, _, _, report = built
    (imported,) = [i for i in report["images"] if i["image"] == "imported"]
    assert "was built as linux/amd64, but linux/arm64 was asked for" in imported["error"]
    assert report["retcode"] == 1
    tags = _get(lab, "imported/tags/list")
    assert tags.status_code == 404 or report["tag"] not in (tags.json().get("tags") or [])


def test_retention_keeps_every_manifest_a_kept_index_references(lab, built):
    root, _, _, first = built
    (root / "imported").rename(root.parent / "imported-out")  # a clean second run
    proc, second = _run(lab, root)
    assert second["retcode"] == 0, proc.stdout + proc.stderr
    old_index, _ = _manifest(lab, "child", first["tag"])
    new_index, _ = _manifest(lab, "child", second["tag"])
    done = lab.salt_json(
        "imagebuild.prune", "keep=1", "repositories=child", "dry_run=False", tool="salt-run"
    )
    entry = done["repositories"]["child"]
    slugs = ("linux-arm-v7", "linux-arm64")
    assert sorted(entry["deleted"]) == sorted(
        [first["tag"], *(f"{first['tag']}-{s}" for s in slugs)]
    )
    left = sorted(_get(lab, "child/tags/list").json()["tags"])
    assert left == sorted([second["tag"], *(f"{second['tag']}-{s}" for s in slugs), "latest"])
    for manifest in new_index["manifests"]:
        assert _get(lab, f"child/manifests/{manifest['digest']}").status_code == 200
    for manifest in old_index["manifests"]:
        if manifest["digest"] not in {m["digest"] for m in new_index["manifests"]}:
            assert _get(lab, f"child/manifests/{manifest['digest']}").status_code == 404
