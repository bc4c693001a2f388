"""Benchmark: what the htpasswd bcrypt cost costs a registry, as ratios measured in one run.

    .venv/bin/python bench/registry_auth.py [requests per round, default 40]

Starts Debian's ``docker-registry`` (the registry the lab and the boards run) three times on
this machine, on plain HTTP on a loopback port: with an htpasswd of cost 12 (a login's cost),
of cost 5 (``armswarm:registry:htpasswd_cost``'s default, ``htpasswd -B``'s), and without
authentication (the baseline: what serving the request costs). Each round sends the same
authenticated requests one after another on one keep-alive connection: ``GET /v2/`` and a blob
``HEAD`` (what every layer of a push or pull starts with). Prints requests per second and each
against the baseline. The registry checks the hash on every request, so the ratio is what a
pull or push pays on top, times the board's slowness (a Cortex-A53 is several times slower
than this host at bcrypt). Nothing is asserted.
"""

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "_utils"))

from armswarm_core.common import password_hashes  # noqa: E402

USER, PASSWORD = "builder", "a-long-random-machine-secret-0f3c9a"
BLOB = "sha256:" + "0" * 64


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(workdir: Path, cost: int | None):
    port = _free_port()
    conf = {
        "version": 0.1,
        "storage": {"filesystem": {"rootdirectory": str(workdir / "data")}},
        "http": {"addr": f"127.0.0.1:{port}"},
        "log": {"level": "error"},
    }
    if cost is not None:
        hashed = password_hashes.hash_password(PASSWORD, "bcrypt", rounds=cost)
        (workdir / "htpasswd").write_text(f"{USER}:{hashed}\n")
        conf["auth"] = {"htpasswd": {"realm": "bench", "path": str(workdir / "htpasswd")}}
    (workdir / "config.yml").write_text(yaml.safe_dump(conf))
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(workdir / "config.yml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v2/"
    for _ in range(100):
        try:
            requests.get(url, timeout=1)
            return proc, url
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("docker-registry did not start (apt-get install docker-registry)")


def _round(url: str, count: int, auth) -> float:
    """Requests per second of ``count`` GET /v2/ + blob HEAD pairs on one session."""
    with requests.Session() as session:
        session.auth = auth
        assert session.get(url, timeout=30).status_code == 200  # warm: TCP, first check
        started = time.perf_counter()
        for _ in range(count // 2):
            assert session.get(url, timeout=30).status_code == 200
            # 404: no such blob, after the authentication the registry did first
            assert session.head(f"{url}bench/blobs/{BLOB}", timeout=30).status_code == 404
        return (count // 2 * 2) / (time.perf_counter() - started)


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    rates = {}
    for label, cost in (("no auth (baseline)", None), ("cost 5", 5), ("cost 12", 12)):
        with tempfile.TemporaryDirectory() as tmp:
            proc, url = _serve(Path(tmp), cost)
            try:
                rates[label] = _round(url, count, None if cost is None else (USER, PASSWORD))
            finally:
                proc.terminate()
                proc.wait(timeout=10)
    base = rates["no auth (baseline)"]
    print(f"registry requests per second, {count} per round (docker-registry on loopback):")
    for label, rate in rates.items():
        print(f"  {label:<20} {rate:8.1f} req/s   x{base / rate:6.1f} the baseline's time")
    print(
        f"cost 12 against cost 5: each authenticated request takes "
        f"x{rates['cost 5'] / rates['cost 12']:.1f} as long"
    )


if __name__ == "__main__":
    main()
