"""Constructs of real Dockerfiles the parser used to misread, each reproduced in a few lines of
our own and checked against what BuildKit's frontend and dockerd's classic builder do (the
project that ships the construct is named at each case; nothing of theirs is copied)."""

import pytest
from armswarm_core import ArmswarmError
from armswarm_core.build import build_dag, dockerfile

pytestmark = pytest.mark.unit


def refs(text, args=None):
    return [(r.kind, r.value) for r in dockerfile.parse(text, args).references]


# -- heredocs --------------------------------------------------------------------------------
def test_a_heredoc_with_blanks_after_the_operator():
    # the shell habit `cat << EOF > file` (e.g. in docker's own heredoc blog examples); since
    # dockerfile 1.16 BuildKit's lexer joins the blanks after << to the word ("allow whitespace
    # in heredocs"): the lines up to EOF are a body, not instructions
    text = "FROM base\nRUN cat << EOF > /etc/motd\nFROM not-an-image\nEOF\nFROM tools\n"
    parsed = dockerfile.parse(text)
    assert [r.value for r in parsed.references] == ["base", "tools"]
    assert [(line, name) for line, _, name in parsed.heredocs] == [(2, "EOF")]
    # tabs too, and a file descriptor before the operator
    text = "FROM base\nRUN cat 3<<\t END\nFROM body\nEND\n"
    assert [name for _, _, name in dockerfile.parse(text).heredocs] == ["END"]


def test_a_heredoc_name_is_not_expanded():
    # buildkit's parser_heredoc_test: RUN <<$EOF ends at a line "$EOF", not at an empty line
    text = "FROM base\nRUN <<$EOF\n\nFROM body\n$EOF\nFROM tools\n"
    assert [r.value for r in dockerfile.parse(text).references] == ["base", "tools"]


def test_an_unterminated_quote_on_a_heredoc_line_is_refused():
    # buildkit's invalid heredocs: <<'EOF and <<EOF" (its lexer then sees no heredoc at all)
    for line in ("RUN <<'EOF", 'RUN cat <<EOF"'):
        with pytest.raises(ArmswarmError, match="line 2: .*unterminated quote"):
            dockerfile.parse(f"FROM base\n{line}\necho\nEOF\n")


def test_a_line_no_builder_takes_as_an_instruction_is_refused():
    # RUN <<- EOT (a blank after <<-) opens no heredoc in BuildKit's lexer: its body is read
    # as instructions, and both builders stop at "unknown instruction"
    with pytest.raises(ArmswarmError, match="line 3: unknown instruction ECHO"):
        dockerfile.parse("FROM base\nRUN <<- EOT\necho hi\nEOT\n")
    with pytest.raises(ArmswarmError, match="line 2: unknown instruction COPYY"):
        dockerfile.parse("FROM base\nONBUILD COPYY a b\n")
    # a # after an instruction is no comment (hadolint and BuildKit read it as arguments)
    with pytest.raises(ArmswarmError, match="line 1: FROM takes .* starts no comment"):
        dockerfile.parse("FROM alpine:3.20 # pinned\n")


def test_onbuild_and_json_forms_hold_no_reference_of_this_build():
    # arhat-dev/dockerfile: ONBUILD COPY --from=builder runs in the child's build, not here;
    # a JSON-form RUN with escaped quotes around "<<EOF" opens no heredoc
    text = (
        "FROM base AS builder\nFROM base\nONBUILD COPY --from=tools /a /a\n"
        'RUN ["sh", "-c", "cat \\"<<EOF\\""]\nFROM final\n'
    )
    assert refs(text) == [("from", "base"), ("from", "base"), ("from", "final")]


# -- COPY --from and RUN --mount from= -------------------------------------------------------
def test_copy_from_an_index_names_an_earlier_stage_only():
    # linuxserver and docker-library images: COPY --from=0 (the first stage)
    assert refs("FROM a\nFROM b\nCOPY --from=0 / /\n") == [("from", "a"), ("from", "b")]
    # the current stage or one that does not exist: both builders refuse, it is no image "1"
    for index in ("1", "7", "-1"):
        with pytest.raises(ArmswarmError, match=f"line 3: COPY --from={index}: "):
            dockerfile.parse(f"FROM a\nFROM b\nCOPY --from={index} / /\n")
    # FROM takes no index: "FROM 0" is an image named 0, as in both builders
    assert refs("FROM a\nFROM 0\n") == [("from", "a"), ("from", "0")]


def test_copy_from_a_later_stage_is_refused():
    # BuildKit: "cannot copy from stage, it needs to be defined before current stage"; the
    # classic builder would pull an image of that name (here a tree image: a wrong parent)
    text = "FROM alpine AS app\nCOPY --from=tools /t /t\nFROM alpine AS tools\n"
    with pytest.raises(ArmswarmError, match="line 2: COPY --from=tools: .*stage defined later"):
        dockerfile.parse(text)
    with pytest.raises(ArmswarmError, match="line 2: .*from=app: .*its own stage"):
        dockerfile.parse("FROM alpine AS app\nRUN --mount=from=app,target=/x true\n")


def test_variables_in_copy_from_and_mount_from_are_refused():
    # BuildKit refuses both ("variable expansion is not supported for --from, define a new
    # stage with FROM using ARG"); the classic builder looks up the literal "$IMAGE"
    for line in ("COPY --from=$IMAGE / /", 'COPY --from="${IMAGE}" / /'):
        with pytest.raises(ArmswarmError, match="line 3: .*variable.*FROM"):
            dockerfile.parse(f"ARG IMAGE=tools\nFROM base\n{line}\n")
    with pytest.raises(ArmswarmError, match="line 2: .*variable"):
        dockerfile.parse("FROM base\nRUN --mount=type=cache,from=${CACHE},target=/c true\n")


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("ADD --from=tools /a /a", "ADD has no --from"),  # a COPY habit
        ("COPY --from tools /a /a", "--from needs a value"),  # the value is the next word
        ("COPY --FROM=tools /a /a", "unknown option --FROM"),  # flags are case-sensitive
        ("COPY --from=tools --from=other /a /a", "--from given twice"),
    ],
)
def test_copy_from_flags_the_builders_refuse(line, match):
    with pytest.raises(ArmswarmError, match=f"line 2: .*{match}"):
        dockerfile.parse(f"FROM base\n{line}\n")


# -- stage names -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "match"),
    [
        # a multi-platform example in the wild: FROM build AS platform-arm/v7
        ("FROM build AS platform-arm/v7\n", "invalid stage name platform-arm/v7"),
        ("FROM build AS 1st\n", "invalid stage name 1st"),
        ("ARG NAME=x\nFROM build AS $NAME\n", r"invalid stage name \$NAME"),
        ("FROM a AS build\nFROM b AS Build\n", "stage name build is used twice"),
    ],
)
def test_stage_names_the_builders_refuse(text, match):
    with pytest.raises(ArmswarmError, match=match):
        dockerfile.parse(text)


# -- image references ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ref",
    [
        "registry.lan:5000/armv7h/archlinux:2025.01.01",  # a registry with a port
        "ubuntu:24.04@sha256:" + "a" * 64,  # a tag and a digest (docker-library pins)
        "ghcr.io/linuxserver/baseimage-alpine:arm64v8-3.20",  # linuxserver's per-arch tags
        "localhost/base",
        "[::1]:5000/base",
        "arm32v7/debian:bookworm-slim",
        "my__org/a--b.c_d:v1.0-rc_1",
    ],
)
def test_valid_references(ref):
    assert refs(f"FROM {ref}\n") == [("from", ref)]


def test_a_platform_argument_buildkit_sets_and_the_classic_builder_does_not():
    # dopos/docker-alpine: FROM scratch AS arch-arm64 … FROM arch-${TARGETARCH}, TARGETARCH never
    # declared: BuildKit sets it by itself, the classic builder (and the build job, which passes
    # only declared platform arguments) leaves it empty: "arch-", read before as an image
    text = "FROM scratch AS arch-arm64\nFROM scratch AS arch-amd64\nFROM arch-${TARGETARCH}\n"
    with pytest.raises(ArmswarmError, match="line 3: FROM arch-.*TARGETARCH.*ARG TARGETARCH"):
        dockerfile.parse(text)
    declared = "ARG TARGETARCH\n" + text
    assert refs(declared, {"TARGETARCH": "arm64"}) == []


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("ARG TAG\nFROM base:${TAG}\n", "TAG has no default"),  # jupyter-style ARG TAG
        ("ARG TAG=\nFROM base:$TAG\n", "TAG is empty"),
        ("FROM ${REGISTRY}/base\n", "REGISTRY is not declared"),
        ("FROM Ubuntu:22.04\n", "not an image reference"),  # upper case (FROM SCRATCH too)
        ('FROM "alpine\n', "unterminated"),
        ("FROM base\nCOPY --from=Tools / /\n", "not an image reference"),
    ],
)
def test_malformed_references_are_refused(text, match):
    with pytest.raises(ArmswarmError, match=match):
        dockerfile.parse(text)


# -- what the classic builder cannot read or do ----------------------------------------------
def test_a_line_longer_than_docker_reads_is_refused():
    # dockerfile parser: "dockerfile line greater than max allowed size of 65535"
    assert refs("FROM base\nRUN echo " + "x" * 65000 + "\n") == [("from", "base")]
    with pytest.raises(ArmswarmError, match="line 2: longer than 65535 bytes"):
        dockerfile.parse("FROM base\nRUN echo " + "é" * 33000 + "\n")


def test_options_only_buildkit_has():
    # the classic builder: "the --chmod option requires BuildKit", and RUN takes no option
    # at all (COPY --chmod=0755 is in docker's own heredoc examples; RUN --device is new)
    text = "FROM base\nCOPY --chmod=0755 a /a\nADD --chmod=644 b /b\nRUN --device=x true\n"
    assert dockerfile.parse(text).buildkit == [
        "line 2: COPY --chmod",
        "line 3: ADD --chmod",
        "line 4: RUN --device",
    ]


# -- the tree reads platform-dependent references per platform -----------------------------
def test_references_that_depend_on_the_platform(tmp_path):
    # the multi-arch pattern: ARG TARGETARCH; FROM target-${TARGETARCH} (stages per arch), and
    # a tree of per-arch bases (linuxserver's arm64v8-… tags, as directories here)
    files = {
        "tools-arm64/Dockerfile": "FROM alpine\n",
        "tools-arm/Dockerfile": "FROM alpine\n",
        "app/Dockerfile": (
            "ARG TARGETARCH\nFROM scratch AS target-arm64\nFROM scratch AS target-arm\n"
            "FROM target-${TARGETARCH}\nCOPY --from=tools-${TARGETARCH} / /\n"
        ),
        "app/image.yaml": "platforms: [linux/arm64, linux/arm/v7]\n",
        "bare/Dockerfile": "ARG TARGETARCH\nFROM ${TARGETARCH}\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    # COPY --from=tools-${TARGETARCH} is refused (a variable), FROM is read per platform
    with pytest.raises(ArmswarmError, match="app/Dockerfile: line 5: COPY --from.*variable"):
        build_dag.load(tmp_path, "registry.lan:5000", resolve=lambda name: set())
    (tmp_path / "app/Dockerfile").write_text(
        "ARG TARGETARCH\nFROM tools-${TARGETARCH} AS tools\nFROM scratch AS target-arm64\n"
        "FROM scratch AS target-arm\nFROM target-${TARGETARCH}\nCOPY --from=tools / /\n"
    )
    graph = build_dag.load(tmp_path, "registry.lan:5000", resolve=lambda name: set())
    assert graph.images["app"].parents == ["tools-arm", "tools-arm64"]
    assert graph.images["bare"].parents == []  # FROM arm64, FROM arm … (Docker Hub names)


def test_platform_references_of_an_image_without_a_list_are_the_boards(tmp_path):
    # No platforms: or arch:: the references are read for the ARM platforms only. Read for
    # amd64, 386, riscv64 … as well, they named parents (base-amd64 …) no ARM tree has.
    files = {
        "base-arm64/Dockerfile": "FROM scratch\n",
        "base-arm/Dockerfile": "FROM scratch\n",
        "app/Dockerfile": "ARG TARGETARCH\nFROM registry.lan:5000/base-${TARGETARCH}\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = build_dag.load(tmp_path, "registry.lan:5000", resolve=lambda name: set())
    assert graph.images["app"].parents == ["base-arm", "base-arm64"]
