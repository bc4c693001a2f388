"""States for board-level settings (see the ``armnode`` formula for the whole node)."""

from armswarm_core import ArmswarmError, bootconfig

__virtualname__ = "armnode"


def __virtual__():
    if __grains__.get("kernel") != "Linux":
        return False, "armnode: Linux only"
    return __virtualname__


def kernel_args(name="kernel-args", present=(), absent=()):
    """
    The boot configuration's kernel command line has each ``present`` argument exactly once
    and no ``absent`` one (a bare key in ``absent`` removes every ``key=…``). The rest of the
    file is left as it is. A change regenerates ``boot.scr`` or runs ``u-boot-update`` as the
    boot flavour needs, and sets the reboot-required marker (it takes effect at the next boot).

    .. code-block:: yaml

        fsck-at-boot:
          armnode.kernel_args:
            - present: [fsck.mode=force, fsck.repair=yes]
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    boot_root = __opts__.get("armnode.boot_root", "/")
    try:
        change = bootconfig.plan(boot_root, list(present or ()), list(absent or ()))
        if not change:
            ret["comment"] = "The kernel command line is as specified"
            return ret
        ret["changes"] = {
            "file": change["file"],
            "old": " ".join(change["old"]),
            "new": " ".join(change["new"]),
            "reboot_required": True,
        }
        if __opts__["test"]:
            ret["result"] = None
            ret["comment"] = f"{change['file']} would be changed (a reboot applies it)"
            return ret
        bootconfig.apply(boot_root, change)
        ret["comment"] = f"{change['file']} changed; reboot to apply"
    except ArmswarmError as exc:
        ret.update(result=False, changes={}, comment=str(exc))
    return ret
