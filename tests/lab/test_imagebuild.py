"""Distributed image builds on the lab: the example tree across all nodes into the registry,
failure isolation, a node killed mid-build, the registry going away, retention."""

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
import salt.config
import salt.utils.event

from armswarm import paths

pytestmark = pytest.mark.lab

EXAMPLE = paths.tree_root() / "salt/imagebuild/images"


def _api(lab, path, method="GET", **kwargs):
    return requests.request(
        method,
        f"https://{lab.registry}/v2/{path}",
        auth=lab.registry_auth,
        verify=str(lab.ca_file),
        timeout=10,
        **kwargs,
    )


def _digest(lab, repo, ref):
    accept = (
        "application/vnd.docker.distribution.manifest.v2+json,"
        "application/vnd.oci.image.manifest.v1+json,"
        "application/vnd.docker.distribution.manifest.list.v2+json,"
        "application/vnd.oci.image.index.v1+json"
    )
    response = _api(lab, f"{repo}/manifests/{ref}", "HEAD", headers={"Accept": accept})
    return response.headers.get("Docker-Content-Digest") if response.ok else None


def _layers(lab, repo, ref):
    accept = "application/vnd.docker.distribution.manifest.v2+json"
    response = _api(lab, f"{repo}/manifests/{ref}", headers={"Accept": accept})
    response.raise_for_status()
    return [layer["digest"] for layer in response.json()["layers"]]


def _run(lab, *args, check=True):
    proc = lab.run_salt("salt-run", "--out=json", "imagebuild.run", *args, check=False)
    report = json.loads(proc.stdout) if proc.stdout.strip() else {}
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, report


def _tree(tmp_path, names=None, edits=None) -> Path:
    """A copy of the example tree (only ``names`` and what they need), with file ``edits``."""
    root = tmp_path / "tree"
    shutil.copytree(EXAMPLE, root)
    if names:
        for path in sorted(root.rglob("*"), reverse=True):
            is_image = (path / "Dockerfile").exists() or (path / "build.sh").exists()
            if is_image and path.relative_to(root).as_posix() not in names:
                shutil.rmtree(path)
    for rel, text in (edits or {}).items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        if rel.endswith(".sh"):
            target.chmod(0o755)
    return root


@pytest.fixture(scope="module")
def first_run(lab):
    """The example tree built once, with the master's events recorded."""
    opts = salt.config.client_config(str(lab.master_conf_dir / "master"))
    listener = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True)
    events = []
    stop = threading.Event()

    def listen():
        while not stop.is_set():
            data = listener.get_event(wait=0.5, tag="armswarm/imagebuild/", full=True)
            if data:
                events.append(data["tag"])

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    proc, report = _run(lab, "source=salt://imagebuild/images")
    stop.set()
    thread.join()
    listener.destroy()
    return proc, report, events


def test_example_tree_builds_across_nodes_into_the_registry(lab, first_run):
    proc, report, events = first_run
    # one job per image and platform
    images = {item["job"]: item for item in report["images"]}
    assert len({item["image"] for item in images.values()}) >= 10
    assert all(item["status"] == "done" for item in images.values()), report
    # Each job built on a node whose board runs its platform (the machine the node reports,
    # as `uname -m` on the board would), and both platforms' boards built something. (How
    # many arm64 boards share the work is the scheduler's choice: with second-long jobs one
    # fast board can finish first.)
    machines = {"aarch64": "linux/arm64", "armv7l": "linux/arm/v7"}
    boards = {
        node: machines[lab.salt_json(node, "grains.get", "armnode:machine")[node]]
        for node in lab.node_names()
    }
    for item in images.values():
        assert boards[item["node"]] == item["platform"], (item, boards)
    assert {boards[item["node"]] for item in images.values()} == {"linux/arm/v7", "linux/arm64"}
    tag = report["tag"]
    for name, published in report["published"].items():
        # a manifest, or the index over its platforms
        assert _digest(lab, name, tag) == published["digest"]
        assert _digest(lab, name, "latest") == published["digest"]
    # Children are built on this run's parents of their platform: their layers start with the
    # parent's.
    for child, parent in (("runtime", "base"), ("web", "runtime"), ("queue", "worker")):
        for item in (i for i in images.values() if i["image"] == child):
            (parent_item,) = [
                i
                for i in images.values()
                if i["image"] == parent and i["platform"] == item["platform"]
            ]
            parent_layers = _layers(lab, parent, parent_item["digest"])
            assert _layers(lab, child, item["digest"])[: len(parent_layers)] == parent_layers
    # The report, its timeline, progress in the output and one event per job start/finish.
    assert json.loads(Path(report["report"]).read_text())["tag"] == tag
    assert Path(report["timeline"]).read_text().startswith("<svg")
    assert "done" in proc.stderr and "image" in proc.stderr  # progress lines
    starts = [e for e in events if e.endswith("/job/start")]
    dones = [e for e in events if e.endswith("/job/done")]
    assert len(starts) == len(dones) == len(images)
    # Each node announced its build before the push (its next job may start meanwhile), and
    # told build and push time apart.
    built = [e for e in events if e.endswith("/job/built")]
    assert len(built) == len(images), events
    for item in images.values():
        assert item["build_seconds"] > 0 and item["push_seconds"] > 0, item


def test_the_example_base_is_slim_and_keeps_its_filters_for_the_children(lab, first_run):
    # What the pushed images hold, asked of their own programs on the nodes that built them.
    probe = (
        "find /usr/share/doc -type f ! -name copyright | wc -l; "
        "ls /usr/share/man 2>/dev/null | wc -l; "
        "for p in usrmerge usr-is-merged; do dpkg-query -W -f='${db:Status-Status}\\n' $p; done; "
        "test -d /usr/share/perl && echo perl-modules || echo no-perl-modules; "
        "test -L /bin && echo merged-usr || echo split-usr; "
        "ls /usr/share/doc | wc -l; cat /etc/dpkg/dpkg.cfg.d/*"
    )
    for item in first_run[1]["images"]:
        if item["image"] not in ("base", "runtime"):
            continue
        ref = f"{lab.registry}/{item['image']}@{item['digest']}"
        code, out = lab.exec(
            item["node"],
            ["docker", "run", "--rm", "--platform", item["platform"], ref, "sh", "-c", probe],
        )
        assert code == 0, out
        docs, manuals, usrmerge, is_merged, perl, merged, packages, *filters = out.splitlines()
        # no documentation but the copyrights (one per package), no manuals; /usr merged
        # without the usrmerge package and the perl modules it pulls in
        assert (docs, manuals) == ("0", "0"), (item["job"], out)
        assert (usrmerge, is_merged) == ("not-installed", "installed"), out
        assert (perl, merged) == ("no-perl-modules", "merged-usr"), out
        assert int(packages) > 50, out
        # the filters dpkg keeps applying to what the children install
        assert "path-exclude=/usr/share/doc/*" in filters, out
        assert "path-include=/usr/share/doc/*/copyright" in filters, out


def test_jobs_went_to_one_node_each_and_the_job_cache_holds_no_context(lab, first_run):
    _, report, _ = first_run
    jobs = lab.salt_json("jobs.list_jobs", "search_function=imagebuild.build", tool="salt-run")
    tag = report["tag"]

    def kwargs_of(job):
        return next((a for a in job["Arguments"] if isinstance(a, dict)), {})

    def of_this_run(job):
        ref = str(kwargs_of(job).get("ref", ""))
        return ref.endswith(f":{tag}") or f":{tag}-linux-" in ref

    ours = {jid: job for jid, job in jobs.items() if of_this_run(job)}
    assert len(ours) >= len(report["images"]), sorted(jobs)
    for jid, job in ours.items():
        # published to exactly the node that built it, by id
        assert job["Target-type"] == "list" and len(job["Target"]) == 1, job
        kwargs = kwargs_of(job)
        assert "context" not in kwargs, jid
        assert kwargs["context_source"].startswith("salt://")
        assert len(kwargs["context_sha256"]) == 64
        assert len(json.dumps(job["Arguments"])) < 2000, jid  # a name and a hash, no tar
    # the run's contexts left the master's file server when it ended
    served = lab.master_root / "cache" / "armswarm" / "imagebuild" / "contexts"
    assert served.is_dir() and list(served.iterdir()) == []


def test_plan_builds_nothing(lab, first_run):
    catalog = _api(lab, "_catalog").json()
    plan = lab.salt_json("imagebuild.plan", "source=salt://imagebuild/images", tool="salt-run")
    # one job per (image, platform): the lab's HC1 is linux/arm/v7, the other boards linux/arm64
    assert plan["critical_path"][0] in ("base@linux/arm/v7", "base@linux/arm64")
    assert plan["order"]["depth 1"] == ["base@linux/arm/v7", "base@linux/arm64"]
    assert plan["images"]["base"]["platforms"] == {
        "linux/arm/v7": ["node1"],
        "linux/arm64": ["node2", "node3", "node4", "node5"],
    }
    assert len(plan["nodes"]) == len(lab.node_names())
    assert plan["expected_makespan_seconds"] >= plan["lower_bound_seconds"] > 0
    assert plan["expected_over_bound"] >= 1
    # every node's speed, measured after a run, with the board it is
    speeds = plan["speeds"]
    assert set(speeds) == set(lab.node_names())
    assert speeds["node4"]["board"] == "sopine" and speeds["node2"]["board"] == "rockpro64"
    # a node that built nothing yet keeps its board's default; both platforms' boards built
    assert {v["source"] for v in speeds.values()} <= {"measured", "board default"}, speeds
    measured = {node for node, v in speeds.items() if v["source"] == "measured"}
    # measured only where a node built something, in this run or an earlier one of this lab
    # (up's main job, other tests): the runs' own reports say which
    runs = Path(first_run[1]["report"]).parent.parent
    built = {
        item["node"]
        for report in runs.glob("*/report.json")
        for item in json.loads(report.read_text())["images"]
        if item.get("node")
    }
    assert measured <= built, (speeds, sorted(built))
    assert "node1" in measured and len(measured) >= 2, speeds
    assert _api(lab, "_catalog").json() == catalog


def test_a_second_run_the_same_day_gets_a_new_tag_and_placement_is_respected(
    lab, first_run, tmp_path
):
    _, first, _ = first_run
    # monitor may only build on the Raspberry Pi (a label from its grains): node5. Its
    # Dockerfile changes, so this run's monitor differs from the first run's.
    monitor = (EXAMPLE / "monitor/Dockerfile").read_text() + "LABEL run=second\n"
    edits = {
        "monitor/image.yaml": "labels: {armswarm.board: rpi4}\n",
        "monitor/Dockerfile": monitor,
    }
    root = _tree(tmp_path, names={"base", "monitor"}, edits=edits)
    _, second = _run(lab, f"source={root}")
    assert next(i for i in second["images"] if i["image"] == "monitor")["node"] == "node5"
    day = first["tag"].split(".")[0]
    assert second["tag"].startswith(f"{day}.") and second["tag"] != first["tag"]
    for name in ("base", "monitor"):
        before, now = first["published"][name]["digest"], second["published"][name]["digest"]
        assert _digest(lab, name, first["tag"]) == before  # earlier tag intact
        assert _digest(lab, name, second["tag"]) == now
        assert _digest(lab, name, "latest") == now  # latest is this run's
    # base's root filesystem is the same (reproducible), monitor's content is not
    assert second["published"]["monitor"]["digest"] != first["published"]["monitor"]["digest"]


def test_a_broken_image_skips_only_its_descendants(lab, first_run, tmp_path):
    names = {"base", "runtime", "web", "worker", "queue", "tools", "monitor"}
    root = _tree(tmp_path, names=names, edits={"runtime/Dockerfile": "FROM base\nRUN false\n"})
    latest_before = _digest(lab, "runtime", "latest")
    proc, report = _run(lab, f"source={root}", check=False)
    assert proc.returncode == 1
    status = {item["image"]: item["status"] for item in report["images"]}
    assert status == {
        "base": "done",
        "monitor": "done",
        "tools": "done",
        "runtime": "failed",
        "web": "skipped",
        "worker": "skipped",
        "queue": "skipped",
    }
    failed = next(i for i in report["images"] if i["image"] == "runtime")
    assert "RUN false" in " ".join(failed["log"]) or "non-zero" in failed["error"]
    assert _digest(lab, "runtime", "latest") == latest_before
    assert _digest(lab, "tools", report["tag"]) is not None


def test_bad_trees_fail_before_building(lab, first_run, tmp_path):
    root = _tree(tmp_path, names={"base", "tools"}, edits={"base/Dockerfile": "FROM tools\n"})
    (root / "base/build.sh").unlink()
    (root / "base/image.yaml").unlink()
    proc, _ = _run(lab, f"source={root}", check=False)
    assert proc.returncode != 0
    assert "dependency cycle" in proc.stdout + proc.stderr


SLOW_STEP = "sleep 20 && echo slow"
# Prints the pids whose command line holds argv[1] (the probe's own excluded).
_PROCS = (
    "import os, sys\n"
    "me = str(os.getpid())\n"
    "for pid in os.listdir('/proc'):\n"
    "    if pid.isdigit() and pid != me:\n"
    "        try:\n"
    "            line = open(f'/proc/{pid}/cmdline', 'rb').read().replace(b'\\0', b' ')\n"
    "        except OSError:\n"
    "            continue\n"
    "        if sys.argv[1].encode() in line:\n"
    "            print(pid)\n"
)


def _runs(lab, node, text) -> bool:
    """Whether a process on ``node`` (its build containers' included) runs ``text``."""
    code, out = lab.exec(node, ["/opt/salt/bin/python", "-c", _PROCS, text])
    return code == 0 and bool(out.split())


def test_a_node_killed_mid_build_has_its_job_finish_elsewhere(lab, first_run, tmp_path):
    root = _tree(
        tmp_path,
        names={"base", "slow"},
        edits={"slow/Dockerfile": f"FROM base\nRUN {SLOW_STEP} > /slow\n"},
    )
    argv = lab.salt_argv(
        "salt-run",
        "--out=json",
        "imagebuild.run",
        f"source={root}",
        "target=node4,node5",
        "tgt_type=list",
        "probe_every=3",
        "probe_timeout=4",
    )
    runner = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = None
    deadline = time.monotonic() + 180
    while victim is None and time.monotonic() < deadline:
        # The node whose slow RUN step is running (not just any build container: base's
        # steps run containers too, and a kill then hits base), seen in the node's processes
        # (BuildKit runs no container that docker ps lists).
        victim = next((n for n in ("node4", "node5") if _runs(lab, n, SLOW_STEP)), None)
        time.sleep(0.5)
    assert victim, "the slow build never started"
    container = lab.client.containers.get(lab.container_name(lab.node(victim)))
    container.kill()
    try:
        out, _ = runner.communicate(timeout=240)
    finally:
        container.start()
        lab.wait_minions()
    report = json.loads(out)
    slow = next(i for i in report["images"] if i["image"] == "slow")
    assert slow["status"] == "done", out
    assert [a["status"] for a in slow["attempts"]] == ["lost", "ok"]
    assert slow["node"] != victim and report["lost_nodes"] == [victim]


def test_registry_outage_during_push(lab, first_run, tmp_path):
    # The base takes a while (a root filesystem): it says when its image is made, and the
    # registry goes away just before the push.
    marker = "/tmp/armswarm-test-built"
    slow_base = (EXAMPLE / "base/build.sh").read_text() + f"touch {marker}\nsleep 3\n"
    root = _tree(tmp_path, names={"base"}, edits={"base/build.sh": slow_base})

    def run_until_built(*args):
        for node in lab.node_names():
            lab.exec(node, ["rm", "-f", marker])
        argv = lab.salt_argv("salt-run", "--out=json", "imagebuild.run", f"source={root}", *args)
        runner = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 200
        while not any(lab.exec(n, ["test", "-e", marker])[0] == 0 for n in lab.node_names()):
            assert time.monotonic() < deadline and runner.poll() is None, "the base never got built"
            time.sleep(0.5)
        return runner

    # Back within the push retries: the image lands.
    runner = run_until_built()
    lab._stop("registry")
    time.sleep(8)
    lab._start_registry()
    out, _ = runner.communicate(timeout=240)
    report = json.loads(out)
    # base for each platform of the boards
    assert all(base["status"] == "done" for base in report["images"]), out
    assert max(base["push_tries"] for base in report["images"]) > 1
    # Down for good: a clear error after the retries.
    # (Gone once the image is made, not after a fixed while: on a loaded machine the run had
    # not yet asked the registry, and failed before any build, without an images report.)
    runner = run_until_built("retries=0")
    lab._stop("registry")
    try:
        out, _ = runner.communicate(timeout=240)
    finally:
        lab._start_registry()
    assert runner.returncode == 1
    report = json.loads(out)
    assert report.get("images"), out
    for base in report["images"]:
        assert base["status"] == "failed"
        assert "push of" in base["error"] and "failed 4 times" in base["error"]


def test_retention_keeps_latest_and_recent_tags(lab, first_run):
    repo = "retention-demo"
    node = "node1"
    tags = ["20260101", "20260102", "20260103", "20260104", "20260105"]
    hand = "20991231"  # someone's own tag that looks dated: never adopted, never deleted
    for index, tag in enumerate([*tags, hand]):
        ref = f"{lab.registry}/{repo}:{tag}"
        script = (
            f"mkdir -p /tmp/r{index} && echo {index} > /tmp/r{index}/v && "
            f"tar -C /tmp/r{index} -c . | docker import - {ref} && docker push {ref}"
        )
        code, out = lab.exec(node, ["sh", "-c", script])
        assert code == 0, out
    # latest is the same image as the oldest dated tag.
    code, out = lab.exec(
        node,
        [
            "sh",
            "-c",
            f"docker tag {lab.registry}/{repo}:20260101 {lab.registry}/{repo}:latest && "
            f"docker push {lab.registry}/{repo}:latest",
        ],
    )
    assert code == 0, out
    shared = _digest(lab, repo, "latest")
    assert shared == _digest(lab, repo, "20260101")

    # pushed by hand: retention keeps them all until the operator adopts them
    before = lab.salt_json("imagebuild.prune", "keep=2", f"repositories={repo}", tool="salt-run")
    assert before["repositories"][repo]["deleted"] == before["repositories"][repo]["untagged"] == []
    assert before["repositories"][repo]["kept_not_made_by_armswarm"] == [*tags, hand]
    adopted = lab.salt_json("imagebuild.adopt", repo, "runs=" + ",".join(tags), tool="salt-run")
    assert sorted(adopted["adopted"]) == tags
    dry = lab.salt_json("imagebuild.prune", "keep=2", f"repositories={repo}", tool="salt-run")
    assert dry["dry_run"] is True
    entry = dry["repositories"][repo]
    assert entry["deleted"] == ["20260102", "20260103"]
    assert entry["untagged"] == ["20260101"]
    assert len(_api(lab, f"{repo}/tags/list").json()["tags"]) == 7  # nothing changed

    done = lab.salt_json(
        "imagebuild.prune", "keep=2", f"repositories={repo}", "dry_run=False", tool="salt-run"
    )
    # The lab's registry runs on the host, not on a node: no collection to run.
    assert done["garbage_collection"].startswith("skipped: armswarm:registry:node is not set")
    left = sorted(_api(lab, f"{repo}/tags/list").json()["tags"] or [])
    assert left == ["20260104", "20260105", hand, "latest"]
    assert done["repositories"][repo]["kept_not_made_by_armswarm"] == [hand]
    assert _digest(lab, repo, "latest") == shared  # the shared digest survived
