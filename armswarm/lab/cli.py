"""``armswarm-lab``: bring the lab cluster up or down, inspect it, talk to its master and nodes."""

import argparse
import json
import os
import sys

from armswarm.lab.cluster import Lab, LabError

PASSTHROUGH = ("salt", "salt-run", "salt-key", "salt-cp")
USAGE_EXAMPLES = """
examples:
  armswarm-lab up                    # build (cached), start, run the main job, print a summary
  armswarm-lab status --json
  armswarm-lab sync                  # after changing the checkout (restarts stale minions)
  armswarm-lab salt "*" test.ping    # salt / salt-run / salt-key against the lab master
  armswarm-lab salt-run jobs.list_jobs
  armswarm-lab exec node1 docker info
  armswarm-lab down
"""


def _lab(args) -> Lab:
    return Lab(name=args.name, subnet=args.subnet)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="armswarm-lab",
        description="The armswarm lab: a salt-master, a TLS registry and board-impersonating "
        "Docker nodes on this machine.",
        epilog=USAGE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--name", default=os.environ.get("ARMSWARM_LAB_NAME", "armswarm-lab"))
    parser.add_argument("--subnet", default=os.environ.get("ARMSWARM_LAB_SUBNET", "10.77.0.0/24"))
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="bring the lab up (if it is up, report) and run the main job")
    up.add_argument("--no-main-job", action="store_true", help="only start the cluster")
    up.add_argument(
        "--verbose", action="store_true", help="print the main job's full Salt output too"
    )
    sub.add_parser(
        "sync", help="ship this tree's modules; restart minions whose armswarm_core changed"
    )
    sub.add_parser("down", help="remove everything the lab created")
    status = sub.add_parser("status", help="show nodes, boards, addresses, registry, master")
    status.add_argument("--json", action="store_true")
    sub.add_parser("summary", help="nodes and boards, swarm node table, registry contents")
    for tool in PASSTHROUGH:
        sub.add_parser(tool, help=f"{tool} … against the lab master")
    sub.add_parser("exec", help="exec NODE CMD…: run a command on a node")
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after a pass-through command belongs to it (argparse would read its options).
    split = next((i for i, arg in enumerate(argv) if arg in (*PASSTHROUGH, "exec")), len(argv))
    args = parser.parse_args(argv[: split + 1])
    rest = argv[split + 1 :]
    lab = _lab(args)
    try:
        if args.command == "up":
            lab.up(main_job=not args.no_main_job, verbose=args.verbose)
            print(lab.summary())
        elif args.command == "sync":
            restarted = lab.sync()
            print(f"synced; restarted: {', '.join(restarted) or 'none'}")
        elif args.command == "down":
            lab.down()
        elif args.command == "status":
            status_data = lab.status()
            if args.json:
                print(json.dumps(status_data, indent=2))
            else:
                print(f"lab {status_data['name']}: {'up' if status_data['up'] else 'down'}")
                print(
                    f"  {'node':<7} {'address':<14} {'board':<20} {'state':<8} "
                    f"{'os':<32} {'engine':<15} python"
                )
                for node in status_data["nodes"]:
                    print(
                        f"  {node['name']:<7} {node['address']:<14} {node['board']:<20} "
                        f"{node['state']:<8} {node['os'] or node['release']:<32} "
                        f"{node['engine'] or '-':<15} {node['python'] or '-'}"
                    )
                print(
                    f"  registry {status_data['registry']['url']} "
                    f"CA {status_data['registry']['ca_file']}"
                )
                print(f"  master config {status_data['master']['config_dir']}")
                for handler, info in status_data["binfmt"].items():
                    state = "not registered"
                    if info:
                        state = (
                            f"{'enabled' if info['enabled'] else 'disabled'}, flags "
                            f"{info['flags'] or '-'}, {info['interpreter']}"
                            f"{' (registered by this lab)' if info['ours'] else ''}"
                        )
                    print(f"  binfmt {handler}: {state}")
        elif args.command == "summary":
            print(lab.summary())
        elif args.command in PASSTHROUGH:
            os.execv(lab.salt_argv(args.command)[0], lab.salt_argv(args.command, *rest))
        elif args.command == "exec":
            if len(rest) < 2:
                parser.error("usage: armswarm-lab exec NODE CMD…")
            code, out = lab.exec(rest[0], rest[1:])
            sys.stdout.write(out)
            return code
    except LabError as exc:
        print(f"armswarm-lab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
