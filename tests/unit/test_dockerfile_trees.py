"""Dockerfile trees shaped like public ones: the Dockerfile syntax BuildKit accepts, byte-exact
pinning, and trees with variants, skipped directories, symlinks, build contexts above the image
directory, tree-wide build arguments and the cluster registry under other spellings.

Fixtures are small excerpts of public repositories (named where they come from); nothing is
fetched."""

import base64
import io
import os
import tarfile
import textwrap
from types import SimpleNamespace

import pytest
from armswarm_core import ArmswarmError
from armswarm_core.build import build_dag, build_job, dockerfile

pytestmark = pytest.mark.unit

REG = "registry.lan:5000"
ADDRESSES = {"registry.lan": {"10.0.0.5"}, "nas.lan": {"10.0.0.5"}, "other.lan": {"10.0.0.9"}}


def resolve(name):
    return ADDRESSES.get(name, set())


def refs(text, args=None):
    return [(r.kind, r.value) for r in dockerfile.parse(text, args).references]


def _tree(root, files: dict):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
    return root


def _load(root, **kwargs):
    return build_dag.load(root, kwargs.pop("registry", REG), resolve=resolve, **kwargs)


# -- syntax ----------------------------------------------------------------------------------
def test_tabs_lower_case_and_continuations():
    # jessfraz/dockerfiles cloudapp and mutt: FROM<TAB>image, COPY<TAB>src<TAB>dest
    text = (
        "FROM\truby:alpine\n"
        "from base AS Build\n"
        "copy\t--from=tools:1\t/a /a\n"
        "RUN apk add \\  \n"  # spaces after the escape still continue the line
        "# a comment inside the instruction\n"
        "\n"
        "    curl\n"
        "RUN echo \\\\\n"  # an escaped escape does not continue
        "FROM  \t  final\n"
        "COPY --from=build /x /y\n"  # an earlier stage, in any case
    )
    parsed = dockerfile.parse(text)
    assert [(r.kind, r.value) for r in parsed.references] == [
        ("from", "ruby:alpine"),
        ("from", "base"),
        ("copy", "tools:1"),
        ("from", "final"),
    ]
    assert parsed.stages == [None, "build", None]
    assert parsed.references[3].lines == (8, 8)


def test_parser_directives_only_at_the_very_top():
    # the Windows style: backtick escapes, so a backslash ends no line
    backtick = (
        "# syntax=docker/dockerfile:1\n# escape=`\nFROM base\n"
        "COPY --from=tools `\n  C:\\a\\ C:\\b\\\nFROM final\n"
    )
    parsed = dockerfile.parse(backtick)
    assert parsed.directives == {"syntax": "docker/dockerfile:1", "escape": "`"}
    assert refs(backtick) == [("from", "base"), ("copy", "tools"), ("from", "final")]
    # after a comment or an empty line, "# escape=" is a comment: the backslash stays
    for late in ("# hello\n# escape=`\n", "\n# escape=`\n"):
        parsed = dockerfile.parse(late + "FROM a \\\n  AS b\n")
        assert parsed.escape == "\\" and parsed.stages == ["b"]
    with pytest.raises(ArmswarmError, match="only one escape"):
        dockerfile.parse("# escape=`\n# escape=\\\nFROM a\n")
    with pytest.raises(ArmswarmError, match="escape token"):
        dockerfile.parse("# escape=x\nFROM a\n")


def test_heredoc_bodies_are_not_instructions():
    text = textwrap.dedent(
        """\
        FROM base
        RUN <<EOF
        FROM not-an-image
        COPY --from=nor-this / /
        EOF
        RUN <<-"EOT" bash
        \tFROM still-body
        \tEOT
        COPY <<a.txt <<'b.txt' /dest/
        FROM body-a
        a.txt
        FROM body-b
        b.txt
        RUN ["sh", "-c", "cat <<X"]
        RUN cat <<< NOTAHEREDOC
        FROM tools
        """
    )
    parsed = dockerfile.parse(text)
    assert [r.value for r in parsed.references] == ["base", "tools"]
    assert [(line, name) for line, _, name in parsed.heredocs] == [
        (2, "EOF"),
        (6, "EOT"),
        (9, "a.txt"),
        (9, "b.txt"),
    ]
    assert all("heredoc" in item for item in parsed.buildkit)
    with pytest.raises(ArmswarmError, match="unterminated heredoc <<EOF"):
        dockerfile.parse("FROM a\nRUN <<EOF\necho\n")


def test_quotes_and_variables_like_jupyter_docker_stacks():
    # jupyter/docker-stacks images/*/Dockerfile: ARG REGISTRY, OWNER, BASE_IMAGE; FROM $BASE_IMAGE
    text = textwrap.dedent(
        """\
        ARG REGISTRY=quay.io
        ARG OWNER=jupyter
        ARG BASE_IMAGE=$REGISTRY/$OWNER/base-notebook
        ARG EMPTY=
        ARG UNSET
        FROM "$BASE_IMAGE"
        FROM ${UNSET-unset}:${EMPTY-empty-is-set}1
        FROM ${EMPTY:-x}/${NOPE:-${OWNER}}/'literal'
        FROM ${OWNER:+yes}
        """
    )
    assert [v for _, v in refs(text)] == [
        "quay.io/jupyter/base-notebook",
        "unset:1",
        "x/jupyter/literal",
        "yes",
    ]
    assert dockerfile.expand("'$literal'\"$OWNER\"", {"OWNER": "o"}) == "$literalo"
    args = {"REGISTRY": REG, "OWNER": "jupyter"}
    assert refs(text, args)[0] == ("from", f"{REG}/jupyter/base-notebook")
    with pytest.raises(ArmswarmError, match="UNSET: needed"):
        dockerfile.parse("ARG UNSET\nFROM ${UNSET:?needed}\n")


def test_stages_platforms_and_buildkit_options():
    # jupyter/docker-stacks docker-stacks-foundation: ROOT_IMAGE defaults to a stage's name
    text = textwrap.dedent(
        """\
        ARG ROOT_IMAGE=default_root_image
        FROM ubuntu:24.04@sha256:5616 AS default_root_image
        FROM mambaorg/micromamba:2.8.1 AS micromamba
        FROM --platform=$BUILDPLATFORM $ROOT_IMAGE
        RUN --mount=type=bind,from=micromamba,source=/bin/micromamba,target=/m true
        RUN --mount=type=cache,target=/c,from=cachebox true
        COPY --link --from=1 / /
        FROM scratch
        """
    )
    parsed = dockerfile.parse(text)
    assert [(r.kind, r.value) for r in parsed.references] == [
        ("from", "ubuntu:24.04@sha256:5616"),
        ("from", "mambaorg/micromamba:2.8.1"),
        ("mount", "cachebox"),
    ]
    assert parsed.buildkit == [
        "line 5: RUN --mount",
        "line 6: RUN --mount",
        "line 7: COPY --link",
    ]
    for bad in ("FROM a b\n", "FROM a AS\n", "FROM\n"):
        with pytest.raises(ArmswarmError, match="line 1"):
            dockerfile.parse(bad)


# -- pinning ---------------------------------------------------------------------------------
PINS = {"base": f"{REG}/base@sha256:1", "tools": f"{REG}/tools@sha256:2"}


@pytest.mark.parametrize("end", ["\r\n", "\n"])
@pytest.mark.parametrize("final", [True, False])
def test_pinning_keeps_every_other_byte(end, final):
    lines = [
        "\ufeff# syntax=docker/dockerfile:1",
        f'ARG BASE="{REG}/base"',
        'FROM\t"$BASE" AS b',
        "RUN apt-get update \\",
        "    && true",
        "FROM debian:12",
        "RUN --mount=type=cache,from=tools,target=/t \\",
        "  true",
        "COPY  --from=tools:1  /a /a",
        "COPY --from=b /x /x",
    ]
    text = end.join(lines) + (end if final else "")
    pinned = dockerfile.pin(text, PINS, REG)
    want = list(lines)
    want[2] = f"FROM\t{PINS['base']} AS b"
    want[6] = f"RUN --mount=type=cache,from={PINS['tools']},target=/t \\"
    want[8] = f"COPY  --from={PINS['tools']}  /a /a"
    assert pinned == end.join(want) + (end if final else "")


def test_pinning_a_reference_split_over_lines_is_refused():
    with pytest.raises(ArmswarmError, match="split over a line continuation"):
        dockerfile.pin("FROM ba\\\nse\n", PINS)
    # a heredoc body naming an image is left alone
    text = "FROM base\nRUN <<EOF\nFROM base\nEOF\n"
    assert dockerfile.pin(text, PINS) == f"FROM {PINS['base']}\nRUN <<EOF\nFROM base\nEOF\n"


def test_the_node_writes_the_pinned_dockerfile_byte_for_byte(tmp_path):
    text = b"FROM registry.lan/base\r\nRUN true\r\n"
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "Dockerfile").write_bytes(text)
    calls = []

    def build(**kwargs):
        calls.append(kwargs)
        return iter([{"stream": "ok"}])

    client = SimpleNamespace(api=SimpleNamespace(timeout=60, build=build))
    build_job.Job(client, f"{REG}/web:1", REG).build_dockerfile(
        tmp_path, "sub/Dockerfile", PINS, {}, 30
    )
    assert (tmp_path / ".armswarm.Dockerfile").read_bytes() == (
        f"FROM {PINS['base']}\r\nRUN true\r\n".encode()
    )
    assert calls[0]["dockerfile"] == ".armswarm.Dockerfile" and calls[0]["path"] == str(tmp_path)
    with pytest.raises(ArmswarmError, match="inside the build context"):
        build_job.Job(client, "x:1").build_dockerfile(tmp_path, "../Dockerfile", {}, {}, 30)


# -- trees -----------------------------------------------------------------------------------
def test_a_tree_like_jessfraz_dockerfiles(tmp_path):
    # jessfraz/dockerfiles: one directory per image, some only group variants (chrome/beta),
    # a variant nested in an image directory (firefox/alpine), symlinked directories
    # (bcc -> bcc-tools, wg -> wireguard), images FROM the author's registry (r.j3ss.co/wine).
    root = _tree(
        tmp_path,
        {
            "chrome/beta/Dockerfile": "FROM debian:bullseye-slim\n",
            "chrome/stable/Dockerfile": "FROM debian:bullseye-slim\n",
            "firefox/Dockerfile": "FROM debian:sid-slim\n",
            "firefox/alpine/Dockerfile": "FROM alpine:latest\n",
            "firefox/entrypoint.sh": "#!/bin/sh\n",
            "bcc-tools/Dockerfile": "FROM\tubuntu:16.04\n",
            "wireguard/install/Dockerfile": "FROM alpine\n",
            "wireguard/tools/Dockerfile": "FROM r.j3ss.co/wireguard/install\n",
            "wine/Dockerfile": "FROM debian:bullseye-slim\n",
            "wine-app/Dockerfile": "FROM r.j3ss.co/wine\n",
            "tracer/Dockerfile": "FROM bcc\nCOPY --from=wg/tools /x /x\n",
            "zookeeper/README.md": "versions below\n",
            "empty/.keep": "",
            ".github/workflows/Dockerfile": "FROM nothing\n",
        },
    )
    (root / "bcc").symlink_to("bcc-tools")
    (root / "wg").symlink_to("wireguard")
    graph = _load(root, registry="r.j3ss.co")
    assert sorted(graph.images) == [
        "bcc-tools",
        "chrome/beta",
        "chrome/stable",
        "firefox",
        "tracer",
        "wine",
        "wine-app",
        "wireguard/install",
        "wireguard/tools",
    ]
    assert graph.aliases == {"bcc": "bcc-tools", "wg": "wireguard"}
    assert graph.images["tracer"].parents == ["bcc-tools", "wireguard/tools"]
    assert graph.images["wine-app"].parents == ["wine"]
    assert set(graph.skipped) == {"bcc", "wg", "firefox/alpine/Dockerfile", "zookeeper", "empty"}
    assert "variants" in graph.skipped["firefox/alpine/Dockerfile"]
    assert "built once as bcc-tools" in graph.skipped["bcc"]
    assert graph.skipped["zookeeper"].startswith("no Dockerfile, build.sh or image.yaml")


def test_a_few_hundred_images(tmp_path):
    files = {}
    for index in range(300):
        parent = f"FROM {REG}/img{index // 3:03d}\n" if index >= 3 else "FROM alpine\n"
        files[f"group{index % 7}/img{index:03d}/Dockerfile"] = parent.replace(
            f"img{index // 3:03d}", _group(index // 3)
        )
    graph = _load(_tree(tmp_path, files))
    assert len(graph.images) == 300
    assert graph.images[_group(299)].parents == [_group(99)]
    assert graph.depth() == 6  # 0 → 1..2 → 3..8 → 9..26 → 27..80 → 81..242 → 243..299
    position = {name: i for i, name in enumerate(graph.order)}
    assert all(position[p] < position[n] for n, i in graph.images.items() for p in i.parents)


def _group(index):
    return f"group{index % 7}/img{index:03d}"


def test_variants_like_tianon_dockerfiles_and_jupyter(tmp_path):
    # tianon/dockerfiles: Dockerfile.<variant> next to Dockerfile, a directory with only
    # variants (cygwin), a variant that is a symlink (jenkins/Dockerfile.lts -> lts/Dockerfile),
    # Dockerfile.template (not a Dockerfile); jupyter/docker-stacks: pytorch-notebook/cuda12/.
    root = _tree(
        tmp_path,
        {
            "tianon/containerd/Dockerfile": "FROM debian:trixie-slim\n",
            "tianon/containerd/Dockerfile.1.7": "FROM debian:bookworm-slim\n",
            "tianon/containerd/Dockerfile.template": "FROM {{ .from }}\n",
            "tianon/docker-master/Dockerfile": "FROM tianon/containerd\n",
            "tianon/cygwin/Dockerfile.1809": "FROM mcr.microsoft.com/windows/servercore:1809\n",
            "tianon/jenkins/lts/Dockerfile": "FROM tianon/containerd:1.7\n",
            "tianon/jenkins/image.yaml": (
                "dockerfile: lts/Dockerfile\nvariants: {lts: Dockerfile.lts}\n"
            ),
            "scipy/Dockerfile": "FROM debian\n",
            "pytorch/Dockerfile": "FROM scipy\n",
            "pytorch/cuda12/Dockerfile": "FROM scipy\nCOPY req.txt /\n",
            "pytorch/cuda12/req.txt": "torch\n",
            "pytorch/image.yaml": (
                "variants:\n  cuda12: cuda12/Dockerfile\n"
                "  slim: {dockerfile: Dockerfile, build_args: {SLIM: '1'}}\n"
            ),
        },
    )
    (root / "tianon/jenkins/Dockerfile.lts").symlink_to("lts/Dockerfile")
    graph = _load(root)
    assert "dockerfile: Dockerfile.1809" in graph.skipped["tianon/cygwin/Dockerfile.1809"]
    assert "variants" in graph.skipped["tianon/containerd/Dockerfile.1.7"]
    assert "tianon/containerd/Dockerfile.template" in graph.skipped
    assert graph.images["tianon/docker-master"].parents == ["tianon/containerd"]
    cuda = graph.images["pytorch-cuda12"]
    assert cuda.path == (root / "pytorch/cuda12").resolve() and cuda.dockerfile == "Dockerfile"
    assert cuda.parents == ["scipy"] and cuda.variant_of == "pytorch"
    assert graph.images["pytorch-slim"].build_args == {"SLIM": "1"}
    assert graph.images["tianon/jenkins-lts"].parents == ["tianon/containerd"]
    # declaring the variant takes it off the skipped list
    (root / "tianon/containerd/image.yaml").write_text("variants: {'1.7': Dockerfile.1.7}\n")
    graph = _load(root)
    assert "tianon/containerd/Dockerfile.1.7" not in graph.skipped
    assert graph.images["tianon/containerd-1.7"].dockerfile == "Dockerfile.1.7"
    (root / "tianon/containerd/image.yaml").write_text("variants: {Bad: Dockerfile.1.7}\n")
    with pytest.raises(ArmswarmError, match="variant Bad"):
        _load(root)


def test_symlinks_are_aliases_and_loops_are_refused(tmp_path):
    root = _tree(
        tmp_path / "tree", {"base/Dockerfile": "FROM alpine\n", "app/Dockerfile": "FROM b\n"}
    )
    (tmp_path / "outside").mkdir()
    (root / "b").symlink_to("base")
    (root / "gone").symlink_to("nowhere")
    graph = _load(root)
    assert graph.aliases == {"b": "base"} and graph.images["app"].parents == ["base"]
    # the node rewrites the alias too (the pins carry every spelling the Dockerfile uses)
    pins = graph.images["app"].pins({"base": "sha256:7"}, REG)
    assert pins == {"base": f"{REG}/base@sha256:7", "b": f"{REG}/base@sha256:7"}
    assert dockerfile.pin("FROM b\n", pins) == f"FROM {REG}/base@sha256:7\n"
    assert "b" not in graph.images and "broken symlink" in graph.skipped["gone"]
    # a loop inside a build context is not sent (and does not stop the tree)
    (root / "app/l1").symlink_to("../app/l2")
    (root / "app/l2").symlink_to("../app/l1")
    (root / "Dockerfile.root").write_text("FROM alpine\n")
    graph = _load(root)
    assert "symlink loop" in graph.skipped["app/l1"] and "root" in graph.skipped["Dockerfile.root"]
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(build_job.pack(root / "app")))) as tar:
        assert tar.getnames() == [".", "./Dockerfile"]
    (root / "grp").mkdir()
    (root / "grp/self").symlink_to("..")
    (root / "loop1").symlink_to("loop2")
    (root / "loop2").symlink_to("loop1")
    (root / "out").symlink_to(tmp_path / "outside")
    with pytest.raises(ArmswarmError) as err:
        _load(root)
    text = str(err.value)
    assert "grp/self: symlink loop" in text and "loop1: symlink loop" in text
    assert "out: symlink to" in text and "outside the tree" in text


def test_a_context_above_the_image_directory(tmp_path):
    # repositories whose build context is the repository root: apps/web's Dockerfile copies
    # the shared lib/ from two levels up.
    root = _tree(
        tmp_path / "tree",
        {
            "lib/common.txt": "shared\n",
            "apps/web/Dockerfile": "FROM alpine\nCOPY lib/common.txt /srv/\n",
            "apps/web/image.yaml": "context: ../..\n",
            "apps/job/build.sh": "#!/bin/sh\n",
            "apps/job/image.yaml": "context: ..\n",
            "apps/web/conf/shared": "x",
        },
    )
    (root / "apps/web/conf/lib").symlink_to("../../../lib/common.txt")  # inside the context
    graph = _load(root)
    web = graph.images["apps/web"]
    assert web.path == root.resolve() and web.dockerfile == "apps/web/Dockerfile"
    assert graph.images["apps/job"].script == "job/build.sh"
    dest = tmp_path / "unpacked"
    dest.mkdir()
    build_job._unpack(build_job.pack(web.path), dest)
    assert (dest / "lib/common.txt").read_text() == "shared\n"
    # the link through ".." arrives as a copy of its target, not as a refused link
    assert (dest / "apps/web/conf/lib").read_text() == "shared\n"
    assert not (dest / "apps/web/conf/lib").is_symlink()
    (root / "apps/web/image.yaml").write_text("context: ../../..\n")
    with pytest.raises(ArmswarmError, match="context ../../.. leaves the tree"):
        _load(root)
    (root / "apps/web/image.yaml").write_text("context: ../../lib\n")
    with pytest.raises(ArmswarmError, match="this directory or one above it"):
        _load(root)


def test_links_that_leave_the_context_are_listed_and_not_sent(tmp_path):
    # tianon/dockerfiles: every image directory links gsl.sh -> ../.gsl-common/gsl.sh
    root = _tree(
        tmp_path,
        {".gsl-common/gsl.sh": "#!/bin/sh\n", "perl/Dockerfile": "FROM docker.io/library/perl:5\n"},
    )
    (root / "perl/gsl.sh").symlink_to("../.gsl-common/gsl.sh")
    graph = _load(root)
    assert "leaves the build context of perl" in graph.skipped["perl/gsl.sh"]
    assert graph.images["perl"].parents == []
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(build_job.pack(root / "perl")))) as tar:
        assert tar.getnames() == [".", "./Dockerfile"]
    (root / "perl/Dockerfile").write_text("FROM perl:5.38\n")
    with pytest.raises(ArmswarmError, match="depends on itself.*docker.io/library/perl"):
        _load(root)


def test_tree_wide_build_args(tmp_path):
    root = _tree(
        tmp_path,
        {
            "tree.yaml": "build_args: {REGISTRY: quay.io, OWNER: jupyter, TAG: '1'}\n",
            "jupyter/base/Dockerfile": "FROM debian\n",
            "jupyter/minimal/Dockerfile": (
                "ARG REGISTRY=quay.io\nARG OWNER=jupyter\n"
                "ARG BASE_IMAGE=$REGISTRY/$OWNER/base\nARG TAG\nFROM $BASE_IMAGE:${TAG}\n"
            ),
            "jupyter/minimal/image.yaml": "build_args: {TAG: '3'}\n",
        },
    )
    with pytest.raises(ArmswarmError, match="quay.io/jupyter/base:3 is ambiguous"):
        _load(root)
    graph = _load(root, build_args={"REGISTRY": REG, "TAG": 2})
    minimal = graph.images["jupyter/minimal"]
    assert minimal.build_args == {"REGISTRY": REG, "OWNER": "jupyter", "TAG": "3"}
    assert minimal.parents == ["jupyter/base"]
    assert graph.images["jupyter/base"].build_args == {
        "REGISTRY": REG,
        "OWNER": "jupyter",
        "TAG": "2",
    }
    for bad, match in (
        ({"FLAG": True}, "FLAG must be a string or a number"),
        ({"bad-name": "x"}, "not a build argument name"),
        (["A=1"], "build_args must be a mapping"),
    ):
        with pytest.raises(ArmswarmError, match=match):
            _load(root, build_args=bad)
    (root / "tree.yaml").write_text("build_arg: {}\n")
    with pytest.raises(ArmswarmError, match="tree.yaml: unknown keys build_arg"):
        _load(root)


@pytest.mark.parametrize(
    "ref",
    [
        "base",
        "registry.lan:5000/base",
        "registry.lan/base:1",  # without the port
        "10.0.0.5:5000/base",  # the address
        "10.0.0.5/base@sha256:00",
        "nas.lan:5000/base",  # another name of the same address
        "REGISTRY.LAN:5000/base",
        "alias.lan:5000/base",  # a configured alias
    ],
)
def test_any_spelling_of_the_cluster_registry_names_the_tree_image(tmp_path, ref):
    root = _tree(tmp_path, {"base/Dockerfile": "FROM alpine\n", "app/Dockerfile": f"FROM {ref}\n"})
    graph = _load(root, aliases=["alias.lan:5000"])
    assert graph.images["app"].parents == ["base"]
    pinned = dockerfile.pin(f"FROM {ref}\n", {"base": f"{REG}/base@sha256:9"})
    assert pinned == f"FROM {REG}/base@sha256:9\n"


@pytest.mark.parametrize(
    ("ref", "match"),
    [
        ("registry.lan:5001/base", "ambiguous.*registry.lan:5001, which is not the cluster"),
        ("other.lan:5000/base", "ambiguous.*which is not the cluster registry"),
        ("ghost.lan/base", "ambiguous.*does not resolve on the master"),
        ("docker.io/base", "ambiguous"),
        ("10.0.0.5:5000/gone", "gone is in the cluster registry but not in the tree"),
        ("registry.lan/gone:1", "in the cluster registry but not in the tree"),
    ],
)
def test_other_registries_naming_a_tree_image_are_errors(tmp_path, ref, match):
    root = _tree(tmp_path, {"base/Dockerfile": "FROM alpine\n", "app/Dockerfile": f"FROM {ref}\n"})
    with pytest.raises(ArmswarmError, match=match):
        _load(root)


def test_external_images_stay_external(tmp_path):
    root = _tree(
        tmp_path,
        {
            "base/Dockerfile": "FROM docker.io/library/base:1\n",
            "app/Dockerfile": "FROM other.lan:5000/tools\nCOPY --from=ghcr.io/x/y / /\n",
        },
    )
    graph = _load(root)
    assert graph.images["app"].parents == [] and graph.images["base"].parents == []


def test_a_heredoc_needs_buildkit_and_says_so(tmp_path):
    root = _tree(tmp_path, {"app/Dockerfile": "FROM alpine\nRUN <<EOF\necho hi\nEOF\n"})
    with pytest.raises(ArmswarmError) as err:
        _load(root)
    text = str(err.value)
    assert "app/Dockerfile: line 2: RUN <<EOF (a heredoc): needs BuildKit" in text
    assert "classic builder" in text and "docker buildx build" in text


# -- the HC1 author's tree -------------------------------------------------------------------
# jit06/docker-images: the base is made by archlinux_image_builder/mkimage-arch.sh (pacstrap,
# docker import, tag, push); bozon, nginx_naxsi and phpmyadmin are
# FROM registry.local.lan:5000/armv7h/archlinux; mariadb and mosquitto come from Docker Hub.
HC1_REG = "registry.local.lan:5000"


def hc1_tree(root, converted: bool):
    files = {
        "bozon/Dockerfile": (
            f"FROM {HC1_REG}/armv7h/archlinux\r\n\r\n# install needed packages\r\n"
            "RUN pacman -Sy --noconfirm \\\r\n    lighttpd \\\r\n    php-fpm\r\n"
            "COPY etc /etc/\r\n"
        ),
        "bozon/etc/lighttpd/lighttpd.conf": "server.port = 80\n",
        "nginx_naxsi/Dockerfile": f"FROM {HC1_REG}/armv7h/archlinux\nRUN pacman -Sy nginx\n",
        "phpmyadmin/Dockerfile": f"FROM {HC1_REG}/armv7h/archlinux\n",
        "mariadb/Dockerfile": "FROM arm32v7/alpine\n",
        "mosquitto/Dockerfile": "FROM eclipse-mosquitto\n",
    }
    base = "armv7h/archlinux/" if converted else "archlinux_image_builder/"
    files[base + "mkimage-arch.sh"] = "#!/usr/bin/bash\n# pacstrap, docker import\n"
    files[base + "mkimage-archarm-pacman.conf"] = "[options]\n"
    if converted:
        files[base + "build.sh"] = '#!/bin/sh\nexec ./mkimage-arch.sh armv7 "$ARMSWARM_REGISTRY"\n'
        files[base + "image.yaml"] = "arch: [armv7l]\ntimeout: 3600\n"
    return _tree(root, files)


def test_the_hc1_authors_tree_as_published_fails_clearly(tmp_path):
    root = hc1_tree(tmp_path, converted=False)
    with pytest.raises(ArmswarmError) as err:
        build_dag.load(root, HC1_REG, resolve=lambda name: {"192.168.1.10"})
    text = str(err.value)
    assert "bozon: parent registry.local.lan:5000/armv7h/archlinux is in the cluster" in text


def test_the_hc1_authors_tree_converted_builds_children_on_this_runs_base(tmp_path):
    root = hc1_tree(tmp_path, converted=True)
    graph = build_dag.load(root, HC1_REG, resolve=lambda name: {"192.168.1.10"})
    assert graph.order[0] == "armv7h/archlinux"
    assert graph.images["armv7h/archlinux"].script == "build.sh"
    assert graph.images["armv7h/archlinux"].arch == ["armv7l"]
    for child in ("bozon", "nginx_naxsi", "phpmyadmin"):
        assert graph.images[child].parents == ["armv7h/archlinux"]
    assert graph.images["mariadb"].parents == []
    source = (root / "bozon/Dockerfile").read_bytes().decode()
    pin = {"armv7h/archlinux": f"{HC1_REG}/armv7h/archlinux@sha256:abc"}
    pinned = dockerfile.pin(source, pin, HC1_REG)
    assert pinned == source.replace(
        f"{HC1_REG}/armv7h/archlinux\r\n", f"{HC1_REG}/armv7h/archlinux@sha256:abc\r\n", 1
    )
    assert pinned.count("\r\n") == source.count("\r\n")
    assert os.access(root / "armv7h/archlinux/build.sh", os.F_OK)
