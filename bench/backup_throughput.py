"""Benchmark: volume backup and restore throughput (MB/s) against a plain ``tar`` of the same
volume to the same network drive, as ratios measured in one run.

    .venv/bin/python bench/backup_throughput.py [size in MB, default 256]

Brings a lab up (or uses ARMSWARM_BENCH_LAB / ARMSWARM_BENCH_LAB_SUBNET when that lab is up,
and leaves it up), fills a volume on node4 with half random and half compressible data, then
times on the node itself: ``tar -cf`` to the share (then ``sync`` of the file: backups are
fsynced too) and ``backup.run`` (gzip, then none) for the backup; on node5, ``tar -xf`` into an
empty Docker volume (the node's Docker storage, where ``backup.restore`` writes, not a tmpfs)
and ``backup.restore`` for the restore. Mount points are resolved before the clock starts.
The figures of ``backup.run``/``backup.restore`` are the module's own (without salt-call's
start-up); the plain tar is timed in the same shell. Nothing is asserted.
"""

import json
import sys

from benchlab import bench_lab

from armswarm.lab.cluster import NODE_BACKUP_SHARE

VOLUME = "bench_data"
PLAIN_VOLUME = "bench_plain_restore"
BENCH_CONF = "/etc/salt/minion.d/zz-bench-backup.conf"


def sh(lab, node, script) -> str:
    code, out = lab.exec(node, ["sh", "-c", script])
    if code != 0:
        raise SystemExit(f"{node}: {script}\n{out}")
    return out


def timed(lab, node, script) -> float:
    out = sh(lab, node, f"s=$(date +%s.%N); {script} >/dev/null; e=$(date +%s.%N); echo $s $e")
    start, end = map(float, out.split()[-2:])
    return end - start


def salt_call(lab, node, *args) -> dict:
    out = sh(lab, node, "salt-call --out=json --log-level=quiet " + " ".join(args))
    return json.loads(out)["local"]


def set_compression(lab, node, compression):
    # salt-call reads minion.d afresh (the running minion does not): opts win over pillar.
    conf = json.dumps({"armswarm": {"backup": {"compression": compression}}})
    sh(lab, node, f"echo '{conf}' > {BENCH_CONF}")


def main():
    size_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    with bench_lab() as (lab, _own):
        lab.up()
        lab.sync()
        half = size_mb // 2
        mp = f"$(docker volume inspect -f {{{{.Mountpoint}}}} {VOLUME})"
        for node in ("node4", "node5"):
            sh(lab, node, f"docker volume rm -f {VOLUME} >/dev/null 2>&1; true")
        sh(
            lab,
            "node4",
            f'docker volume create {VOLUME} >/dev/null && d="{mp}" && mkdir -p "$d/a" "$d/b" && '
            f'head -c {half}M /dev/urandom > "$d/a/random.bin" && '
            f"yes 'armswarm backup benchmark line of compressible text' | "
            f'head -c {size_mb - half}M > "$d/b/text.log"',
        )
        source = sh(lab, "node4", f'echo "{mp}"').strip()
        plain_file = f"{NODE_BACKUP_SHARE}/bench-plain.tar"
        plain_backup = timed(
            lab, "node4", f'tar -cf {plain_file} -C "{source}" . && sync {plain_file}'
        )
        # The baseline restores where backup.restore does: into a volume of the node's dockerd.
        sh(lab, "node5", f"docker volume rm -f {PLAIN_VOLUME} >/dev/null 2>&1; true")
        sh(lab, "node5", f"docker volume create {PLAIN_VOLUME} >/dev/null")
        dest = sh(lab, "node5", f"docker volume inspect -f '{{{{.Mountpoint}}}}' {PLAIN_VOLUME}")
        dest = dest.strip()
        fs = sh(lab, "node5", f'stat -f -c %T "{dest}"').strip()
        plain_restore = timed(lab, "node5", f'tar -xf {plain_file} -C "{dest}"')
        sh(lab, "node5", f"docker volume rm -f {PLAIN_VOLUME} >/dev/null; rm -f {plain_file}")
        print(f"volume: {size_mb} MB on node4 (half random, half text), target {NODE_BACKUP_SHARE}")
        print(f"restores on node5 into a Docker volume ({fs})")
        print(f"{'operation':<28} {'seconds':>8} {'MB/s':>8} {'vs tar':>7}")
        for label, seconds in (
            ("plain tar -cf (backup)", plain_backup),
            ("plain tar -xf (restore)", plain_restore),
        ):
            print(f"{label:<28} {seconds:>8.2f} {size_mb / seconds:>8.1f}")
        for compression in ("gzip", "none"):
            set_compression(lab, "node4", compression)
            ret = salt_call(lab, "node4", "backup.run", f"volumes={VOLUME}", "force=True")
            done = ret["backed_up"][VOLUME]
            sh(lab, "node5", f"docker volume rm -f {VOLUME} >/dev/null 2>&1; true")
            restored = salt_call(lab, "node5", "backup.restore", VOLUME)
            for label, seconds, plain in (
                (f"backup.run ({compression})", done["seconds"], plain_backup),
                (f"backup.restore ({compression})", restored["seconds"], plain_restore),
            ):
                print(
                    f"{label:<28} {seconds:>8.2f} {size_mb / seconds:>8.1f} {plain / seconds:>7.2f}"
                )
            print(f"  archive {done['archive_bytes'] / 2**20:.0f} MiB")
        for node in ("node4", "node5"):
            sh(lab, node, f"docker volume rm -f {VOLUME} >/dev/null 2>&1; rm -f {BENCH_CONF}")
        sh(lab, "node4", f"rm -rf {NODE_BACKUP_SHARE}/volumes/{VOLUME}")


if __name__ == "__main__":
    main()
