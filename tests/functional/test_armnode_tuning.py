"""Optional tuning states through Salt's real state loader: the CPU governor (udev rule + live
sysfs) and root mount options in fstab, each check → apply → re-apply → check."""

import copy
from pathlib import Path

import pytest
import salt.config
import salt.loader
from armswarm_core import tuning

REPO = Path(__file__).resolve().parents[2]
FSTAB = """# /etc/fstab: static file system information.
UUID=1111-2222\t/boot\tvfat\tdefaults\t0\t2
UUID=abcd\t/\text4\tdefaults,relatime\t0\t1
"""


@pytest.fixture
def env(tmp_path):
    sysfs = tmp_path / "sys"
    for cpu, current in (("cpu0", "performance"), ("cpu1", "schedutil")):
        cpufreq = sysfs / "devices/system/cpu" / cpu / "cpufreq"
        cpufreq.mkdir(parents=True)
        (cpufreq / "scaling_governor").write_text(current + "\n")
        (cpufreq / "scaling_available_governors").write_text("performance schedutil ondemand\n")
    (tmp_path / "fstab").write_text(FSTAB)
    opts = copy.deepcopy(salt.config.minion_config(None))
    opts.update(
        {
            "file_client": "local",
            "cachedir": str(tmp_path / "cache"),
            "module_dirs": [str(REPO / "_modules")],
            "states_dirs": [str(REPO / "_states")],
            "utils_dirs": [str(REPO / "_utils")],
            "armnode.sysfs": str(sysfs),
            "armnode.udev_rules_dir": str(tmp_path / "rules.d"),
            "armnode.boot_root": str(tmp_path),
            "grains": {"kernel": "Linux"},
        }
    )
    funcs = salt.loader.minion_mods(opts)
    states = salt.loader.states(opts, funcs, salt.loader.utils(opts), {})
    return states, tmp_path


def cycle(states, fun, **kwargs):
    results = []
    for test in (True, False, False, True):
        states.opts["test"] = test
        results.append(states[fun](**kwargs))
    predicted, applied, again, check = results
    assert predicted["result"] is None and predicted["changes"]
    assert applied["result"] is True and applied["changes"] == predicted["changes"], applied
    for ret in (again, check):
        assert ret["result"] is True and ret["changes"] == {}, ret
    return applied


def test_cpu_governor_cycle(env):
    states, tmp = env
    applied = cycle(states, "armnode.cpu_governor", governor="schedutil")
    assert applied["changes"]["cpus"] == {"cpu0": {"old": "performance", "new": "schedutil"}}
    assert (
        'scaling_governor}="schedutil"' in (tmp / "rules.d" / tuning.GOVERNOR_RULE_FILE).read_text()
    )


def test_governor_the_cpus_lack_is_refused(env):
    states, tmp = env
    states.opts["test"] = False
    ret = states["armnode.cpu_governor"](governor="powersave")
    assert ret["result"] is False and "does not offer the 'powersave' governor" in ret["comment"]
    assert not (tmp / "rules.d").exists()


def test_root_mount_options_cycle(env):
    states, tmp = env
    cycle(
        states,
        "armnode.mount_options",
        name="/",
        options=["noatime", "lazytime"],
        fstab=str(tmp / "fstab"),
    )
    lines = (tmp / "fstab").read_text().splitlines()
    assert lines[0] == "# /etc/fstab: static file system information."
    assert lines[1] == "UUID=1111-2222\t/boot\tvfat\tdefaults\t0\t2"
    assert lines[2] == "UUID=abcd\t/\text4\tdefaults,noatime,lazytime\t0\t1"
    assert (tmp / "var/lib/armswarm/reboot-required").is_file()


def test_missing_mount_point_is_named(env):
    states, tmp = env
    states.opts["test"] = False
    ret = states["armnode.mount_options"](name="/srv", fstab=str(tmp / "fstab"))
    assert ret["result"] is False and "no entry for /srv" in ret["comment"]
