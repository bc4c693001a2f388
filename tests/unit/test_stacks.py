"""Stack planning: hash labels per service, predictions, and a compose file that survives the
round trip to the docker CLI unchanged."""

import json

import pytest
import yaml
from armswarm_core import ArmswarmError
from armswarm_core.swarm import stacks

COMPOSE = """
services:
  web:
    image: reg:5000/web:v1
    environment: {APP_VERSION: "1e3", MODE: "0o17"}
    networks: [front]
    deploy: {replicas: 2, labels: [tier=web]}
  worker:
    image: reg:5000/worker:v1
    deploy:
networks:
  front: {driver: overlay}
"""


def test_each_service_is_labelled_with_its_hash():
    stamped, hashes = stacks.load_and_stamp(COMPOSE)
    assert set(hashes) == {"web", "worker"}
    assert stamped["services"]["web"]["deploy"]["labels"] == {
        "tier": "web",
        stacks.HASH_LABEL: hashes["web"],
    }
    assert stamped["services"]["worker"]["deploy"]["labels"] == {
        stacks.HASH_LABEL: hashes["worker"]
    }
    assert all(h.startswith("h") for h in hashes.values())


def test_hash_follows_the_service_and_its_networks():
    _, before = stacks.load_and_stamp(COMPOSE)
    _, tag = stacks.load_and_stamp(COMPOSE.replace("web:v1", "web:v2"))
    assert tag["web"] != before["web"] and tag["worker"] == before["worker"]
    _, net = stacks.load_and_stamp(
        COMPOSE.replace("{driver: overlay}", "{driver: overlay, attachable: true}")
    )
    assert net["web"] != before["web"] and net["worker"] == before["worker"]


def test_plan_predicts_create_update_remove():
    _, hashes = stacks.load_and_stamp(COMPOSE)
    existing = {"web": {"hash": "h-old"}, "old": {"hash": "x"}}
    assert stacks.plan(hashes, existing, prune=False) == {"create": ["worker"], "update": ["web"]}
    assert stacks.plan(hashes, existing, prune=True)["remove"] == ["old"]
    same = {name: {"hash": h} for name, h in hashes.items()}
    assert stacks.plan(hashes, same, prune=True) == {}


def test_written_file_reads_back_identically_as_yaml():
    # What the CLI parses (YAML) must be what was hashed: strings stay strings.
    stamped, _ = stacks.load_and_stamp(COMPOSE)
    assert yaml.safe_load(json.dumps(stamped)) == stamped
    env = yaml.safe_load(json.dumps(stamped))["services"]["web"]["environment"]
    assert env == {"APP_VERSION": "1e3", "MODE": "0o17"}


@pytest.mark.parametrize("text", ["services: []", "not: [valid", "version: '3'"])
def test_bad_compose_is_refused(text):
    with pytest.raises(ArmswarmError):
        stacks.load_and_stamp(text)


def test_cli_host_only_for_another_engine():
    assert stacks._cli_host("unix://var/run/docker.sock") is None
    assert stacks._cli_host("unix://run/other.sock") == "unix:///run/other.sock"
    assert stacks._cli_host("tcp://10.0.0.1:2376") == "tcp://10.0.0.1:2376"


@pytest.mark.parametrize("value", ["sometimes", "", "Never", True, None, ["never"]])
def test_bad_resolve_image_is_refused_naming_the_key(value):
    with pytest.raises(ArmswarmError, match="resolve_image must be one of always, changed, never"):
        stacks.check_resolve_image(value)


@pytest.mark.parametrize("value", ["always", "changed", "never"])
def test_resolve_image_reaches_the_cli(value, tmp_path, monkeypatch):
    # A docker CLI that records its arguments: what the deploy asks the real CLI to do.
    record = tmp_path / "argv"
    cli = tmp_path / "docker"
    cli.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    cli.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    stamped, _ = stacks.load_and_stamp(COMPOSE)
    stacks.deploy("web", stamped, None, with_registry_auth=False, resolve_image=value)
    argv = record.read_text().split("\n")
    assert argv[argv.index("--resolve-image") + 1] == value


def test_bad_resolve_image_runs_no_cli(tmp_path, monkeypatch):
    record = tmp_path / "argv"
    cli = tmp_path / "docker"
    cli.write_text(f"#!/bin/sh\ntouch {record}\n")
    cli.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    stamped, _ = stacks.load_and_stamp(COMPOSE)
    with pytest.raises(ArmswarmError, match="resolve_image"):
        stacks.deploy("web", stamped, None, resolve_image="no")
    assert not record.exists()
