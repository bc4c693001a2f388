"""A node's ``imagebuild.build`` fetches its context from the file server by the name the job
gives, through Salt's real ``cp.get_file``, and refuses a context whose hash is not the one
named, before the engine is asked anything."""

import hashlib

import pytest
from armswarm_core.build import build_contexts, build_job
from loaders import load_modules
from salt.exceptions import CommandExecutionError

pytestmark = pytest.mark.functional

REF = "reg.lan:5000/web:20261201"


@pytest.fixture
def node(tmp_path):
    """A minion whose file client serves ``file_roots:armswarm_contexts`` (the master's, as
    the runner writes it), and whose docker engine is a socket nobody serves: a build that
    got past its context would say so."""
    served = tmp_path / "contexts"
    image = tmp_path / "web"
    image.mkdir()
    (image / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /\n")
    data = build_job.pack_bytes(image)
    refs = build_contexts.serve(served, "20261201-abc123", {"web": data})
    mods = load_modules(
        tmp_path,
        id="node2",
        file_roots={build_contexts.SALTENV: [str(served)]},
        pillar={"armswarm": {"docker": {"base_url": f"unix://{tmp_path}/no-docker.sock"}}},
    )
    return mods, refs["web"], data


def test_a_context_whose_hash_differs_is_refused_before_the_build(node):
    mods, ref, data = node
    other = hashlib.sha256(data + b"tampered").hexdigest()
    answer = mods["imagebuild.build"](
        "web", REF, context_source=ref["source"], context_sha256=other
    )
    assert answer["status"] == "failed" and answer["transient"] is False
    assert f"the job names {other}: refused" in answer["error"]
    assert answer["node"] == "node2" and answer["push_tries"] == 0


def test_the_named_context_is_fetched_checked_and_handed_to_the_build(node):
    mods, ref, _ = node
    # the right hash: past the context, to the engine (which is not there)
    with pytest.raises(CommandExecutionError, match="cannot reach the docker engine"):
        mods["imagebuild.build"](
            "web", REF, context_source=ref["source"], context_sha256=ref["sha256"]
        )


def test_a_context_the_master_does_not_serve_and_bad_arguments_are_refused(node):
    mods, ref, _ = node
    gone = ref["source"].replace("20261201-abc123", "20261130-def456")
    answer = mods["imagebuild.build"]("web", REF, context_source=gone, context_sha256=ref["sha256"])
    assert answer["status"] == "failed" and answer["transient"] is False
    assert answer["error"] == f"the master does not serve {gone}"
    answer = mods["imagebuild.build"](
        "web", REF, context_source="/tmp/x", context_sha256=ref["sha256"]
    )
    assert answer["error"] == "context_source must be a salt:// URL, not '/tmp/x'"
    answer = mods["imagebuild.build"]("web", REF, context_source=ref["source"], context_sha256="ab")
    assert answer["error"] == "context_sha256 must be 64 lowercase hex digits, not 'ab'"
    with pytest.raises(CommandExecutionError, match="give context_source and context_sha256"):
        mods["imagebuild.build"]("web", REF)
    with pytest.raises(CommandExecutionError, match="give context_source and context_sha256"):
        mods["imagebuild.build"]("web", REF, context="aGk=", context_source=ref["source"])
