"""``dockerfile`` and ``script`` in image.yaml name files in the image's own directory: not
``../other``, not through a link pointing out of it."""

import os

import pytest
from armswarm_core import ArmswarmError
from armswarm_core.build import build_dag

pytestmark = pytest.mark.unit

REG = "registry.lan:5000"


def _tree(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _load(root):
    return build_dag.load(root, REG, resolve=lambda name: set())


@pytest.mark.parametrize(
    "image_yaml, key",
    [
        ("dockerfile: ../secrets/Dockerfile\n", "dockerfile"),
        ("script: ../secrets/build.sh\n", "script"),
        ("dockerfile: sub/../../secrets/Dockerfile\n", "dockerfile"),
    ],
)
def test_paths_outside_the_image_directory_are_refused(tmp_path, image_yaml, key):
    root = _tree(
        tmp_path,
        {
            "app/image.yaml": image_yaml,
            "app/Dockerfile": "FROM scratch\n",
            "secrets/Dockerfile": "FROM scratch\n",
            "secrets/build.sh": "#!/bin/sh\n",
        },
    )
    with pytest.raises(ArmswarmError, match=rf"app.*{key} .* is outside the image directory"):
        _load(root)


def test_a_link_out_of_the_image_directory_is_refused(tmp_path):
    root = _tree(tmp_path, {"app/image.yaml": "dockerfile: Dockerfile.real\n"})
    (root / "elsewhere").mkdir()
    (root / "elsewhere" / "Dockerfile").write_text("FROM scratch\n")
    os.symlink(root / "elsewhere" / "Dockerfile", root / "app" / "Dockerfile.real")
    with pytest.raises(ArmswarmError, match="outside the image directory"):
        _load(root)


def test_files_in_the_image_directory_still_work(tmp_path):
    root = _tree(
        tmp_path,
        {
            "app/image.yaml": "dockerfile: docker/Dockerfile.app\n",
            "app/docker/Dockerfile.app": "FROM scratch\n",
        },
    )
    graph = _load(root)
    assert [image.name for image in graph.images.values()] == ["app"]
