"""Salt's own output path picks the imagebuild outputter from this tree, and --out wins."""

import copy
import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import salt.config
import salt.loader
import salt.output

pytestmark = pytest.mark.functional

REPO = Path(__file__).resolve().parents[2]
REPORT = {
    "run": "r1",
    "tag": "20261201",
    "seconds": 1.5,
    "counts": {"done": 1},
    "images": [{"image": "base", "status": "done", "node": "node1", "seconds": 1.2}],
    "report": "/x/report.json",
    "timeline": "/x/timeline.svg",
    "retcode": 0,
}


def _opts(tmp_path, **more):
    opts = copy.deepcopy(salt.config.master_config(None))
    opts.update(
        {
            "cachedir": str(tmp_path),
            "outputter_dirs": [str(REPO / "_output")],
            "utils_dirs": [str(REPO / "_utils")],
            "color": False,
            **more,
        }
    )
    return opts


def _display(data, out, opts) -> str:
    buf = io.StringIO()
    with redirect_stdout(buf):
        salt.output.display_output(data, out, opts)
    return buf.getvalue()


def test_the_outputter_loads_and_prints_the_table(tmp_path):
    opts = _opts(tmp_path)
    assert "armswarm_imagebuild" in salt.loader.outputters(opts)
    text = _display(REPORT, "armswarm_imagebuild", opts)
    assert text.startswith("imagebuild run r1  tag 20261201")
    assert "report   /x/report.json" in text


def test_out_json_keeps_the_full_data(tmp_path):
    opts = _opts(tmp_path, output="json")
    assert json.loads(_display(REPORT, "armswarm_imagebuild", opts)) == REPORT
