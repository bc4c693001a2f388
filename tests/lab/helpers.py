"""Helpers shared by the lab tests."""

import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import requests
import yaml

from armswarm.lab import cluster, image
from armswarm.lab.cluster import FIXTURES
from armswarm.lab.image import tar_bytes

# A real token, not the string in our own source that guards against printing one.
TOKEN_PATTERN = "SWMTKN-1-[0-9a-z]{20,}"


def busybox_rootfs(applets=("sh", "echo", "cat"), files=None) -> bytes:
    """A root filesystem with Debian's static busybox (no image can be pulled here)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add("/bin/busybox", arcname="bin/busybox")
        for applet in applets:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        for name, content in (files or {}).items():
            # text, or (text, mode) for an executable
            text, mode = content if isinstance(content, tuple) else (content, 0o644)
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def push_image(lab, node: str, ref: str, rootfs: bytes):
    """``docker import`` a root filesystem on ``node`` as ``ref`` and push it to the registry."""
    container = lab.client.containers.get(lab.container_name(lab.node(node)))
    container.put_archive("/root", tar_bytes({"image.tar": rootfs}))
    for argv in (["docker", "import", "/root/image.tar", ref], ["docker", "push", ref]):
        code, out = lab.exec(node, argv)
        assert code == 0, out


def state_return(lab, node: str, *argv: str, test=False, check=False) -> dict:
    """The return of the one state a ``salt node <argv>`` job runs (``state.single``, or an SLS
    holding one state). A failed state makes salt exit non-zero: the return is what is
    checked, so ``check`` is off unless asked for."""
    if test:
        argv = (*argv, "test=True")
    ret = lab.salt_json(node, *argv, check=check)[node]
    assert isinstance(ret, dict), ret
    (result,) = ret.values()
    return result


def apply_stacks(lab, pillar: dict, test=False, timeout=300, node="node1") -> dict:
    """The one state of ``salt/swarm/stacks.sls`` (as ``swarm.deploy`` runs it on a manager)
    applied on ``node`` with ``pillar`` for this run: its state return."""
    return state_return(
        lab,
        node,
        "state.sls",
        "swarm.stacks",
        f"pillar={json.dumps(pillar)}",
        f"--timeout={timeout}",
        test=test,
    )


def assert_not_in_salt_files(lab, pattern: str, *extra_paths):
    """``pattern`` (a regular expression) is nowhere in the master's tree (job cache, logs),
    ``extra_paths``, nor in any minion's logs and cache."""
    hits = subprocess.run(
        ["grep", "-rlE", pattern, str(lab.master_root), *map(str, extra_paths)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert hits.returncode == 1 and hits.stdout == "", hits.stdout
    for node in lab.node_names():
        code, out = lab.exec(node, ["grep", "-rlE", pattern, "/var/log/salt", "/var/cache/salt"])
        assert code == 1 and out.strip() == "", (node, out)


def assert_no_join_token(lab, *extra_paths):
    """No swarm join token in the master's tree (job cache, logs), ``extra_paths``, nor in any
    minion's logs and cache."""
    hits = subprocess.run(
        ["grep", "-rlE", TOKEN_PATTERN, str(lab.master_root), *map(str, extra_paths)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert hits.returncode == 1 and hits.stdout == "", hits.stdout
    for node in lab.node_names():
        code, out = lab.exec(
            node, ["grep", "-rlE", TOKEN_PATTERN, "/var/log/salt", "/var/cache/salt"]
        )
        assert code == 1 and out.strip() == "", (node, out)


def load_registry_image(lab, node: str, ref: str = "armswarm-lab/registry:local") -> str:
    """A registry image on ``node`` without pulling: Debian's docker-registry binary and the
    libraries it links, ``FROM scratch``, built by the host's dockerd and loaded on the node."""
    binary = shutil.which("docker-registry")
    assert binary, "docker-registry is not installed on the host"
    libs = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "rootfs"
        (root / "bin").mkdir(parents=True)
        shutil.copy2(binary, root / "bin/registry")
        for word in libs.split():
            if word.startswith("/") and Path(word).exists():
                target = root / word.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(word).resolve(), target)
        (Path(tmp) / "Dockerfile").write_text(
            "FROM scratch\nCOPY rootfs/ /\n"
            'ENTRYPOINT ["/bin/registry", "serve", "/etc/docker/registry/config.yml"]\n'
        )
        lab.client.images.build(path=tmp, tag=ref, rm=True)
    data = b"".join(lab.client.images.get(ref).save(named=True))
    container = lab.client.containers.get(lab.container_name(lab.node(node)))
    container.put_archive("/root", tar_bytes({"registry-image.tar": data}))
    code, out = lab.exec(node, ["docker", "load", "-i", "/root/registry-image.tar"])
    assert code == 0, out
    return ref


BASE_SCRIPT = Path(__file__).resolve().parents[2] / "salt/imagebuild/images/base/build.sh"
# What `uname -m` says on each platform, from the kernel (through qemu-user-static in the lab).
MACHINE = {"linux/arm/v7": "armv7l", "linux/arm64": "aarch64"}


def build_base(lab, node: str, platform: str, ref: str) -> str:
    """Build the example tree's base image for ``platform`` on ``node`` with the tree's own
    ``build.sh``, given the platform as the build farm gives it; returns its output. The root
    filesystem comes from the lab's rootfs cache when an earlier build made it."""
    container = lab.client.containers.get(lab.container_name(lab.node(node)))
    container.put_archive("/root", tar_bytes({"base-build.sh": (BASE_SCRIPT.read_text(), 0o755)}))
    arch, _, variant = platform.removeprefix("linux/").partition("/")
    code, out = lab.exec(
        node,
        [
            "env",
            f"ARMSWARM_IMAGE={ref}",
            f"TARGETPLATFORM={platform}",
            f"TARGETARCH={arch}",
            f"TARGETVARIANT={variant}",
            "/root/base-build.sh",
        ],
    )
    assert code == 0, out
    return out


def board_machine(lab, node: str) -> str:
    """``uname -m`` on the real board that ``node`` plays (its fixture's board.yaml)."""
    board = yaml.safe_load((FIXTURES / lab.node(node).board / "board.yaml").read_text())
    return board["uname_m"]


PLATFORM_OF = {machine: platform for platform, machine in MACHINE.items()}
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def put_index(lab, repo: str, tag: str, per_platform: dict) -> str:
    """Put ``repo:tag`` as a manifest list over ``{platform: tag}`` (already pushed); the
    platform of each entry is read from that manifest's own image config. Returns its digest."""
    base = f"https://{lab.registry}/v2/{repo}"
    verify = str(lab.ca_file)
    entries = []
    for platform, source in sorted(per_platform.items()):
        got = requests.get(
            f"{base}/manifests/{source}",
            headers={"Accept": MANIFEST},
            auth=lab.registry_auth,
            verify=verify,
            timeout=30,
        )
        got.raise_for_status()
        manifest = got.json()
        assert manifest["mediaType"] == MANIFEST, manifest
        config = requests.get(
            f"{base}/blobs/{manifest['config']['digest']}",
            auth=lab.registry_auth,
            verify=verify,
            timeout=30,
        ).json()
        entry = {"os": config["os"], "architecture": config["architecture"]}
        if config.get("variant"):
            entry["variant"] = config["variant"]
        variant = f"/{entry['variant']}" if "variant" in entry else ""
        assert f"{entry['os']}/{entry['architecture']}{variant}" == platform, (source, config)
        entries.append(
            {
                "mediaType": MANIFEST,
                "digest": got.headers["Docker-Content-Digest"],
                "size": len(got.content),
                "platform": entry,
            }
        )
    index = {"schemaVersion": 2, "mediaType": MANIFEST_LIST, "manifests": entries}
    put = requests.put(
        f"{base}/manifests/{tag}",
        data=json.dumps(index),
        headers={"Content-Type": MANIFEST_LIST},
        auth=lab.registry_auth,
        verify=verify,
        timeout=30,
    )
    assert put.status_code == 201, put.text
    return put.headers["Docker-Content-Digest"]


# Debian architecture → the TARGETARCH + TARGETVARIANT of the platform its binaries are for
DEBIAN_PLATFORM_ARCH = {"armhf": "armv7", "arm64": "arm64"}


def arm_busybox(debian_arch: str) -> Path:
    """Debian's static busybox for ``debian_arch`` (armhf, arm64), from the mirror the host's
    apt uses (``mmdebstrap --variant=extract``: nothing of the host's apt changes), cached
    under the lab's cache directory."""
    cache = cluster.CACHE_DIR / "arm-busybox"
    target = cache / f"busybox-{debian_arch}"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "root.tar"
        subprocess.run(
            [
                "mmdebstrap",
                "--quiet",
                "--variant=extract",
                "--include=busybox-static",
                f"--arch={debian_arch}",
                "--skip=check/qemu",
                "bookworm",
                str(out),
                image.host_apt_mirror(),
            ],
            check=True,
            capture_output=True,
        )
        with tarfile.open(out) as tar:
            data = tar.extractfile("./bin/busybox").read()
        partial = cache / f".{target.name}.partial.{os.getpid()}"  # two labs' tests at once
        partial.write_bytes(data)
        partial.chmod(0o755)
        partial.rename(target)  # atomic: a cut-off download is never taken for the binary
    return target


def arm_rootfs(debian_arch: str, applets=("sh", "echo", "cat", "uname")) -> bytes:
    """A root filesystem of ``debian_arch`` holding its static busybox and some applets."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(arm_busybox(debian_arch)), arcname="bin/busybox")
        for applet in applets:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return buf.getvalue()
