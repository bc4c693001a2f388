"""States for board-level settings (see the ``armnode`` formula for the whole node)."""

import json
import os
import re
import shutil
import subprocess

import salt.utils.pkg
from armswarm_core import ArmswarmError
from armswarm_core.common import files, state_results
from armswarm_core.node import (
    apt_sources,
    boot_files,
    docker_daemon,
    io_schedulers,
    irqs,
    log_files,
    mail,
    node_settings,
    tuning,
)
from salt.utils.data import traverse_dict_and_list

__virtualname__ = "armnode"


def __virtual__():
    if __grains__.get("kernel") != "Linux":
        return False, "armnode: Linux only"
    return __virtualname__


def kernel_args(name="kernel-args", present=(), absent=()):
    """
    The boot configuration's kernel command line has each ``present`` argument exactly once
    and no ``absent`` one; the rest of the file is left byte for byte as it is.

    * A ``key=value`` is added beside other values of that key, never instead of them
      (``cgroup_enable=cpuset cgroup_enable=memory``, several ``console=``).
    * In ``absent``, ``key=value`` removes exactly that argument; a bare ``key`` removes the
      flag and every ``key=…`` except those ``present`` lists (so ``absent: [fsck.repair]``
      with ``present: [fsck.repair=yes]`` changes a value).
    * ``root=`` and ``rootwait`` are never all removed; an argument the file only gets from
      elsewhere (a u-boot variable, u-boot-menu's defaults) cannot be removed: an error.

    Where the arguments live depends on the boot flavour (see the armnode docs): the default
    label of ``extlinux.conf``, the one line that sets ``bootargs`` in ``boot.txt`` or
    ``boot.ini``, ``extraargs=`` of ``armbianEnv.txt``/``dietpiEnv.txt``, the first line of
    ``cmdline.txt``, or, for u-boot-menu, wherever the parameters in effect come from. A
    change regenerates ``boot.scr`` or runs ``u-boot-update`` and sets the reboot-required
    marker; the original of each file is kept once as ``<file>.armswarm-orig``. When anything
    fails, the files are as they were and a re-run still sees the change as pending.

    .. code-block:: yaml

        fsck-at-boot:
          armnode.kernel_args:
            - present: [fsck.mode=force, fsck.repair=yes]
    """
    ret = state_results.new(name)
    boot_root = __opts__.get("armnode.boot_root", "/")
    try:
        change = boot_files.plan(
            boot_root, _arg_list(present, "present"), _arg_list(absent, "absent")
        )
        if not change:
            return state_results.unchanged(ret, "The kernel command line is as specified")
        ret["changes"] = {
            "file": change["file"],
            "old": " ".join(change["old"]),
            "new": " ".join(change["new"]),
            "files": sorted(change["writes"]),
            "reboot_required": True,
        }
        if change["reason"]:
            ret["changes"]["regenerate"] = change["reason"]
        if __opts__["test"]:
            comment = f"{change['file']} would be changed (a reboot applies it)"
            if change["missing_tool"]:
                comment += f"; needs {change['missing_tool']}, not installed yet"
            return state_results.would_change(ret, comment)
        boot_files.apply(boot_root, change)
        return state_results.changed(ret, f"{change['file']} changed; reboot to apply")
    except (ArmswarmError, OSError) as exc:
        return state_results.failed(ret, exc)


def _arg_list(value, label):
    # None and an empty value mean "nothing"; a string is not a list of arguments.
    if value is None or value == ():
        return []
    if not isinstance(value, list | tuple):
        raise ArmswarmError(f"kernel_args: {label} must be a list, not {value!r}")
    return list(value)


def io_scheduler(name="io-schedulers", schedulers=None):
    """
    I/O scheduler per device class (``mmc``, ``ssd``, ``hdd``, ``nvme``, ``usb``): a udev rule
    that applies it to every matching disk when it appears, and the scheduler of the disks
    present now switched through sysfs. ``deadline``, ``cfq`` and ``noop`` are refused: the
    kernel replaced them with ``mq-deadline``, ``bfq`` and ``none``. On a kernel that only
    offers the legacy schedulers, ``mq-deadline`` is set as ``deadline`` and ``none`` as
    ``noop`` (in the rule too).

    .. code-block:: yaml

        io-schedulers:
          armnode.io_scheduler:
            - schedulers: {mmc: mq-deadline, ssd: mq-deadline, usb: mq-deadline}
    """
    ret = state_results.new(name)
    rules_dir = __opts__.get("armnode.udev_rules_dir", "/etc/udev/rules.d")
    sysfs = __opts__.get("armnode.sysfs", "/sys")
    rule_file = os.path.join(rules_dir, io_schedulers.RULE_FILE)
    try:
        wanted = io_schedulers.validate(
            schedulers if schedulers is not None else {"mmc": "mq-deadline", "ssd": "mq-deadline"}
        )
        rules = io_schedulers.render_rules(wanted, io_schedulers.legacy_kernel(sysfs))
        live = io_schedulers.live_plan(sysfs, wanted)
        ret["changes"] = _file_and_live_changes(rule_file, rules, live, "devices")
        if not ret["changes"]:
            return state_results.unchanged(ret, "I/O schedulers are as specified")
        if __opts__["test"]:
            return state_results.would_change(ret, "I/O schedulers would be set")
        if "rule" in ret["changes"]:
            files.write(rule_file, rules)
            # Only where a udev daemon runs (not in containers): it re-reads rules itself
            # otherwise at its next start.
            if os.path.exists("/run/udev/control") and shutil.which("udevadm"):
                subprocess.run(
                    ["udevadm", "control", "--reload-rules"],
                    check=False,
                    capture_output=True,
                    timeout=30,
                )
        io_schedulers.apply_live(sysfs, live)
        return state_results.changed(ret, "I/O schedulers set")
    except (ArmswarmError, OSError) as exc:
        return state_results.failed(ret, exc)


# apt reads only these names in sources.list.d (others it skips with a notice).
_APT_PART = re.compile(r"^[A-Za-z0-9_.-]+\.(list|sources)$")


def apt_mirror(
    name="/etc/apt",
    debian=None,
    security=None,
    components="main contrib non-free-firmware",
    codename=None,
    managed="sources.list",
):
    """
    apt takes Debian's packages from the mirror ``debian`` (and the security suite from
    ``security`` when given), whichever format the image lists Debian's archive in: the
    managed file ``managed`` (in ``name``, the apt directory) gets the mirror's entries, and
    every other active entry for the same suites is switched off where it stands (deb822
    ``Enabled: no``, a one-line entry commented out ``# armnode mirror:``), so apt no longer
    asks Debian's own servers. Other archives (the board vendor's, Docker's) stay as they
    are; entries the managed file held for them are kept in it. ``codename`` defaults to
    the ``oscodename`` grain; backports come from the mirror when the image had them.
    Without ``security`` the image's security source stays. A node whose packages come from
    Raspbian or Ubuntu is refused: a Debian mirror there breaks every later install. After a
    change the next ``pkg`` state refreshes the package lists.

    CLI Example:

    .. code-block:: bash

        salt '*' state.single armnode.apt_mirror /etc/apt debian=http://mirror.lan/debian
    """
    ret = state_results.new(name)
    try:
        for key, value in (("debian", debian), ("security", security)):
            if (key == "debian" or value is not None) and not isinstance(value, str):
                raise ArmswarmError(f"apt_mirror: {key} must be one URL, not {value!r}")
        if not isinstance(components, str | list | tuple) or not all(
            isinstance(c, str)
            for c in ([components] if isinstance(components, str) else components)
        ):
            raise ArmswarmError(
                f"apt_mirror: components must be a string or list, not {components!r}"
            )
        codename = codename or __grains__.get("oscodename") or ""
        managed_path = os.path.normpath(os.path.join(name, managed))
        parts = os.path.join(name, "sources.list.d")
        if os.path.dirname(managed_path) not in (os.path.normpath(name), parts) or not (
            managed_path.endswith(".list")
        ):
            raise ArmswarmError(
                f"apt_mirror: the managed file {managed_path} must be {name}/sources.list or a"
                f" .list file in {parts} (apt reads no other)"
            )
        texts = {}
        paths = [managed_path]
        if os.path.isdir(parts):
            paths += [
                os.path.join(parts, f) for f in sorted(os.listdir(parts)) if _APT_PART.match(f)
            ]
        paths = list(dict.fromkeys(paths))
        for path in paths:
            text = _read(path)
            if text is not None:
                texts[path] = text
        plan = apt_sources.plan(texts, managed_path, debian, security, codename, components)
        mirror = apt_sources.shown(debian)
        if not plan["write"]:
            return state_results.unchanged(ret, f"apt takes Debian ({codename}) from {mirror}")
        changes = {"file": managed_path}
        if plan["disabled"]:
            changes["switched off"] = plan["disabled"]
        if plan["kept"]:
            changes["kept"] = plan["kept"]
        ret["changes"] = changes
        off = sorted(p for p in plan["write"] if p != managed_path)
        note = f"; switched off Debian's entries in {', '.join(off)}" if off else ""
        if __opts__["test"]:
            return state_results.would_change(
                ret, f"{managed_path} would take Debian ({codename}) from {mirror}{note}"
            )
        # The mirror first: stopped half way, apt has both sources rather than none.
        for path in sorted(plan["write"], key=lambda p: p != managed_path):
            files.write(path, plan["write"][path], None if os.path.exists(path) else 0o644)
        salt.utils.pkg.write_rtag(__opts__)  # the next pkg state refreshes its lists
        return state_results.changed(
            ret, f"{managed_path} takes Debian ({codename}) from {mirror}{note}"
        )
    except (ArmswarmError, OSError) as exc:
        return state_results.failed(ret, exc)


def logrotate_compress(name="/etc/logrotate.conf"):
    """
    logrotate compresses rotated logs: the ``#compress`` line of its configuration is
    uncommented. The file comes with the logrotate package, so a check before the package is
    installed predicts the change instead of failing.
    """
    ret = state_results.new(name)
    try:
        with open(name, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        if __opts__["test"]:
            return state_results.would_change(
                ret, f"{name} (logrotate not installed yet) would get compress", {"compress": True}
            )
        return state_results.failed(ret, f"{name} does not exist (is logrotate installed?)")
    new = log_files.enable_logrotate_compress(text)
    if new == text:
        return state_results.unchanged(ret, "logrotate compresses rotated logs")
    ret["changes"] = {"compress": True}
    if __opts__["test"]:
        return state_results.would_change(ret, f"{name} would get compress")
    files.write(name, new)
    return state_results.changed(ret, f"{name}: compress enabled")


def settings_valid(name="armnode-settings", settings=None):
    """
    The armnode settings (those of ``map.jinja``: :func:`armswarm_core.node.node_settings.resolve`
    over this minion's config, pillar and grains; or ``settings`` when given) are valid: every
    other armnode state requires this one, so bad pillar stops the run before anything
    changes. Errors name the pillar key; secret values are never shown.
    """
    ret = state_results.new(name)
    boot_root = __opts__.get("armnode.boot_root", "/")
    if settings is None:
        conf, errors = node_settings.resolve(__opts__, __pillar__, __grains__)
        errors += node_settings.validate(conf, boot_root)
    else:
        errors = node_settings.validate(settings, boot_root)
    if errors:
        return state_results.failed(
            ret, "Invalid armnode settings, nothing changed:\n" + "\n".join(errors)
        )
    return state_results.unchanged(ret, "Settings are valid")


def docker_daemon_config(name=docker_daemon.PATH, daemon=None, restart=True):
    """
    dockerd's ``daemon.json`` holds ``daemon``, checked before it is written: ``dockerd
    --validate --config-file`` where the engine has it (Docker 23+), else JSON, known keys and
    their types, and no key the docker unit already gives dockerd as a flag (``-H fd://``:
    ``hosts``). A bad key fails the state, naming it, and the file stays as it was.

    ``daemon`` is merged into the file: keys another installer wrote and we never set
    (DietPi's ``data-root``) stay; a key we set before and ``daemon`` no longer has goes. A
    file dockerd could not read (comments, a trailing comma) fails the state, naming it.

    A change restarts dockerd at once only on a node outside a swarm. In a swarm, restarting
    every node of a ``state.apply`` at once would lose the managers' quorum: the node is
    marked and ``salt-run armnode_docker.rolling_restart`` restarts the marked nodes one at a
    time, the quorum kept. ``restart: false`` only writes the file.
    """
    ret = state_results.new(name)
    daemon = {} if daemon is None else daemon
    if not isinstance(restart, bool):
        return state_results.failed(ret, "restart: must be true or false; nothing changed")
    try:
        if not isinstance(daemon, dict):
            docker_daemon.validate(daemon)  # names the problem
        # Merged into the file as it is: another installer's keys (DietPi's data-root) stay.
        on_disk = docker_daemon.read(name)
        merged, kept = docker_daemon.merge(on_disk, daemon, docker_daemon.read_managed(name))
        moved = docker_daemon.data_root_problem(on_disk, merged, name)
        if moved:
            raise ArmswarmError(moved)
        how = docker_daemon.validate(
            merged, kept=kept, path=name, argv=docker_daemon.service_argv()
        )
    except ArmswarmError as exc:
        return state_results.failed(ret, f"{exc}; {name} is unchanged")
    text = docker_daemon.render(merged)
    current = _read(name)

    def record_ours():
        # After the file: a record ahead of a failed write would disown a key still in it.
        if docker_daemon.read_managed(name) != set(daemon):
            docker_daemon.write_managed(daemon, name)

    pending = docker_daemon.is_pending()
    info = docker_daemon.swarm_info() if restart else None
    # None: no dockerd answers
    swarm = None if info is None else info.get("LocalNodeState") or ""
    in_swarm = swarm in ("active", "locked", "pending")
    if current == text:
        if not __opts__["test"]:
            try:
                record_ours()
            except OSError as exc:
                return state_results.failed(ret, f"cannot record the keys armswarm sets: {exc}")
        if pending:
            return state_results.unchanged(
                ret,
                f"{name} is up to date; dockerd restart pending "
                "(salt-run armnode_docker.rolling_restart)",
            )
        return state_results.unchanged(ret, f"{name} is up to date (checked: {how})")
    changes = {"daemon.json": name, "checked": how}
    changes["restart"] = "rolling (pending)" if in_swarm else ("now" if swarm else "none")
    if __opts__["test"]:
        return state_results.would_change(ret, f"{name} would be written", changes)
    try:
        files.write(name, text, 0o644)
        record_ours()
    except OSError as exc:
        return state_results.failed(ret, f"cannot write {name}: {exc}")
    if in_swarm:
        docker_daemon.mark_pending()
        return state_results.changed(
            ret,
            f"{name} written; this node is in a swarm: its dockerd restarts with "
            "salt-run armnode_docker.rolling_restart (one node at a time)",
            changes,
        )
    if swarm is not None:  # dockerd runs, outside a swarm: nothing to keep
        proc = subprocess.run(
            ["systemctl", "restart", "docker"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            return state_results.failed(
                ret, f"{name} written, dockerd restart failed: {proc.stderr.strip()[-300:]}"
            )
    return state_results.changed(ret, f"{name} written", changes)


def mail_relay(
    name="mail-relay",
    relay="msmtp",
    host="",
    port=587,
    tls=True,
    sender="",
    user="",
    password_pillar="",
    root_alias="",
):
    """
    The mail relay's configuration (msmtp or ssmtp) and root's alias. The password comes from
    the pillar key ``password_pillar`` and is written to a root-only file; it never appears in
    the return (changes name the files, not their contents).
    """
    ret = state_results.new(name)
    password = None
    if password_pillar:
        password = traverse_dict_and_list(__pillar__, password_pillar, None)
        if not password:
            return state_results.failed(ret, f"pillar key {password_pillar} holds no password")
    try:
        wanted = mail.render_mail_config(
            relay,
            host,
            port,
            tls,
            sender,
            user,
            None if password is None else str(password),
            root_alias,
        )
    except ArmswarmError as exc:
        return state_results.failed(ret, exc)
    stale = []
    for path, (content, mode) in wanted.items():
        try:
            with open(path, encoding="utf-8") as fh:
                same = fh.read() == content and (os.stat(path).st_mode & 0o777) == mode
        except FileNotFoundError:
            same = False
        if not same:
            stale.append(path)
    if not stale:
        return state_results.unchanged(ret, "The mail relay is configured")
    ret["changes"] = {"files": stale}
    if __opts__["test"]:
        return state_results.would_change(ret, "The mail relay would be configured")
    for path in stale:
        content, mode = wanted[path]
        files.write(path, content, mode)
    return state_results.changed(ret, "The mail relay was configured")


def cpu_governor(name="cpu-governor", governor="ondemand"):
    """
    Every CPU uses the frequency governor ``governor``: a udev rule for the next boots and the
    live setting through sysfs (``armnode.sysfs``). A governor the CPUs do not offer fails
    before anything changes.
    """
    ret = state_results.new(name)
    rule_file = os.path.join(
        __opts__.get("armnode.udev_rules_dir", "/etc/udev/rules.d"), tuning.GOVERNOR_RULE_FILE
    )
    try:
        live = tuning.governor_plan(__opts__.get("armnode.sysfs", "/sys"), governor)
        rule = tuning.governor_rule(governor)
        ret["changes"] = _file_and_live_changes(rule_file, rule, live, "cpus")
        if not ret["changes"]:
            return state_results.unchanged(ret, f"The CPUs use the {governor} governor")
        if __opts__["test"]:
            return state_results.would_change(ret, f"The CPUs would use the {governor} governor")
        if "rule" in ret["changes"]:
            files.write(rule_file, rule)
        tuning.governor_apply(__opts__.get("armnode.sysfs", "/sys"), live)
        return state_results.changed(ret, f"The CPUs use the {governor} governor")
    except (ArmswarmError, OSError) as exc:
        return state_results.failed(ret, exc)


def mount_options(name="/", options=("noatime", "lazytime"), fstab="/etc/fstab"):
    """
    The ``/etc/fstab`` entry of mount point ``name`` carries ``options`` (``noatime``
    replaces ``relatime``/``atime``): fewer writes to flash. Applies at the next mount (the
    reboot marker says so); other entries and comments stay as they are.
    """
    ret = state_results.new(name)
    try:
        options = tuning.check_mount_options(options)
        with open(fstab, encoding="utf-8") as fh:
            text = fh.read()
        new = tuning.fstab_with_options(text, name, options)
        if new == text:
            return state_results.unchanged(ret, f"{name} is mounted with {', '.join(options)}")
        ret["changes"] = {"fstab": fstab, "options": list(options)}
        if __opts__["test"]:
            return state_results.would_change(
                ret, f"{fstab} would give {name} {', '.join(options)}"
            )
        files.write(fstab, new)
        boot_files.mark_reboot_required(
            __opts__.get("armnode.boot_root", "/"), f"mount options of {name} changed in {fstab}"
        )
        return state_results.changed(
            ret, f"{fstab}: {name} gets {', '.join(options)} at its next mount"
        )
    except (ArmswarmError, OSError) as exc:
        return state_results.failed(ret, exc)


def _file_and_live_changes(path, content, live, key):
    changes = {}
    if _read(path) != content:
        changes["rule"] = {"file": path, "new": content}
    if live:
        changes[key] = live
    return changes


def irq_affinity(name="irq-affinity", pattern="eth|xhci|ehci|ahci|dwc", cpus=None):
    """
    Interrupts whose ``/proc/interrupts`` description matches ``pattern`` run on ``cpus``
    (default: the board's big cores from the ``armnode`` grain; nothing to do without them).
    Applied live and kept for the next boots by the ``armswarm-irq-affinity`` unit, whose
    files this state writes (enable the unit with ``service.enabled``).
    """
    ret = state_results.new(name)
    if cpus is None:
        cpus = __grains__.get("armnode", {}).get("big_cores") or []
    try:
        irqs.check(pattern, cpus)
    except ArmswarmError as exc:
        return state_results.failed(ret, exc)
    if not cpus:
        return state_results.unchanged(ret, "This board has no big cores: IRQs stay where they are")
    procfs = __opts__.get("armnode.procfs", "/proc")
    root = __opts__.get("armnode.boot_root", "/")
    wanted = {
        os.path.join(root, irqs.CONF.lstrip("/")): (
            irqs.conf_text(pattern, cpus),
            0o644,
        ),
        os.path.join(root, irqs.SCRIPT.lstrip("/")): (irqs.BOOT_SCRIPT, 0o755),
        os.path.join(root, irqs.UNIT.lstrip("/")): (irqs.UNIT_TEXT, 0o644),
    }
    refused_file = os.path.join(root, irqs.REFUSED.lstrip("/"))
    try:
        refused = irqs.read_refused(refused_file)
        live = irqs.plan(procfs, pattern, cpus, refused)
        stale = [path for path, (content, _) in wanted.items() if _read(path) != content]
        if stale:
            ret["changes"]["files"] = stale
        if live:
            ret["changes"]["irqs"] = live
        done = f"IRQs matching {pattern!r} run on CPUs {irqs.cpu_list(cpus)}"
        if not ret["changes"]:
            return state_results.unchanged(ret, done)
        if __opts__["test"]:
            return state_results.would_change(
                ret, f"IRQs matching {pattern!r} would move to CPUs {irqs.cpu_list(cpus)}"
            )
        for path in stale:
            content, mode = wanted[path]
            files.write(path, content, mode)
        kept = irqs.apply(procfs, live)
        if kept:
            # Recorded, so the next run does not try again (and reports no change).
            refused.update({str(irq): device for irq, device in kept.items()})
            files.write(refused_file, json.dumps(refused, sort_keys=True) + "\n", 0o644)
            for irq in kept:
                ret["changes"]["irqs"].pop(irq)
            if not ret["changes"]["irqs"]:
                del ret["changes"]["irqs"]
            done += (
                "; the kernel cannot move "
                + ", ".join(f"IRQ {irq} ({device})" for irq, device in sorted(kept.items()))
                + ": left where it keeps them"
            )
        if not ret["changes"]:
            return state_results.unchanged(ret, done)
        return state_results.changed(ret, done)
    except (ArmswarmError, OSError) as exc:
        return state_results.failed(ret, exc)


def _read(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def rebooted_if_required(name="reboot-if-required", delay_minutes=1):
    """
    Opt-in: when a change this boot has not applied yet is pending (kernel command line, new
    root), schedule a reboot in ``delay_minutes`` with ``shutdown -r`` (cancel with
    ``shutdown -c``). Nothing happens when no reboot is required.
    """
    ret = state_results.new(name)
    reasons = boot_files.reboot_required(__opts__.get("armnode.boot_root", "/"))
    if not reasons:
        return state_results.unchanged(ret, "No reboot required")
    ret["changes"] = {"reboot_in_minutes": int(delay_minutes), "because": reasons}
    if __opts__["test"]:
        return state_results.would_change(
            ret, f"A reboot would be scheduled in {int(delay_minutes)} min"
        )
    proc = subprocess.run(
        ["shutdown", "-r", f"+{int(delay_minutes)}", "armnode: " + "; ".join(reasons)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if proc.returncode != 0:
        return state_results.failed(
            ret, f"shutdown -r failed: {(proc.stderr or proc.stdout).strip()}"
        )
    return state_results.changed(
        ret, f"Reboot scheduled in {int(delay_minutes)} min (cancel: shutdown -c)"
    )
