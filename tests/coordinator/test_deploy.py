"""The scale-out files: the Kubernetes manifests validate, and they and the Dockerfile name
things that exist (files, the health route, the secret's keys, the CLI's commands).

No cluster and no Docker here: the manifests are checked against the Kubernetes OpenAPI schemas
that ``kubernetes-validate`` ships (offline), strictly (an unknown field fails).
"""

from __future__ import annotations

import copy
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from sqlalchemy import create_engine, inspect

from coordinator.api.app import create_app
from coordinator.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.37.0"
MANIFESTS = sorted(K8S.glob("*.yaml"))


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((K8S / name).read_text())
    return document


def containers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = manifest["spec"]["template"]["spec"]["containers"]
    return containers


def secret_refs(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Environment variable -> (secret name, key) for the variables read from a Secret."""
    refs = {}
    for variable in container.get("env", []):
        ref = variable.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            refs[variable["name"]] = (ref["name"], ref["key"])
    return refs


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_each_manifest_is_valid_against_the_kubernetes_schemas(path):
    for document in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_a_misspelt_field_fails_the_validation():
    deployment = copy.deepcopy(load("deployment.yaml"))
    containers(deployment)[0]["readinesProbe"] = containers(deployment)[0].pop("readinessProbe")

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_the_deployment_runs_replicas_probed_on_the_health_route(tmp_path):
    deployment = load("deployment.yaml")
    (coordinator,) = containers(deployment)
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'x.db'}", admin_token="a" * 32)
    routes = {getattr(route, "path", None) for route in create_app(settings).routes}

    assert deployment["spec"]["replicas"] > 1
    for probe in ("readinessProbe", "livenessProbe"):
        assert coordinator[probe]["httpGet"]["path"] == "/healthz"
    assert "/healthz" in routes
    assert deployment["spec"]["selector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )


def test_the_service_selects_the_deployments_pods_on_their_port():
    deployment, service = load("deployment.yaml"), load("service.yaml")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    ports = {port["name"] for port in containers(deployment)[0]["ports"]}

    assert service["spec"]["selector"].items() <= labels.items()
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= ports


def test_the_database_url_and_admin_token_come_from_the_secret():
    secret = load("secret.example.yaml")
    keys = {(secret["metadata"]["name"], key) for key in secret["stringData"]}
    server = secret_refs(containers(load("deployment.yaml"))[0])
    migrate = secret_refs(containers(load("migrate-job.yaml"))[0])

    assert set(server) == {"FEDGE_DB_URL", "FEDGE_ADMIN_TOKEN"}
    assert set(migrate) == {"FEDGE_DB_URL"}
    assert set(server.values()) | set(migrate.values()) <= keys


def test_the_migration_job_runs_the_migrate_command_which_creates_the_schema(tmp_path):
    (job,) = containers(load("migrate-job.yaml"))
    db_url = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert job["command"][:3] == ["fedge", "coordinator", "migrate"]

    command = [sys.executable, "-m", "fedge.cli", *job["command"][1:], "--db", db_url]
    subprocess.run(command, check=True, cwd=ROOT, capture_output=True, timeout=120)

    engine = create_engine(db_url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {"alembic_version", "jobs", "leases", "devices"} <= tables


def test_the_dockerfile_copies_files_that_exist_and_serves_with_a_health_check():
    instructions = dockerfile_instructions()
    copied = [
        source
        for kind, arguments in instructions
        if kind == "COPY"
        for source in shlex.split(arguments)[:-1]
        if not source.startswith("--")
    ]
    health = " ".join(arguments for kind, arguments in instructions if kind == "HEALTHCHECK")
    (command,) = [arguments for kind, arguments in instructions if kind == "CMD"]
    (port,) = [arguments for kind, arguments in instructions if kind == "EXPOSE"]

    assert copied, "the Dockerfile copies nothing"
    assert [source for source in copied if not (ROOT / source).exists()] == []
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert any(kind == "USER" and arguments != "root" for kind, arguments in instructions)
    assert "/healthz" in health and f":{port}/" in health
    assert yaml.safe_load(command)[:3] == ["fedge", "coordinator", "serve"]
    assert containers(load("deployment.yaml"))[0]["ports"][0]["containerPort"] == int(port)
