"""docker-compose.yml is runnable as written: real fti subcommands and options, images, ports, volumes.

Where the Docker compose plugin exists, `docker compose config` validates the file too.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from feature_stream.settings import FeatureStreamSettings
from fti_cli.main import cli
from fti_cli.stack.settings import StackSettings
from fti_core.settings import FtiSettings
from inference_grpc.settings import InferenceSettings, PredictSettings
from registry.models.settings import RegistrySettings
from trainer.settings import TrainerSettings

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
FTI_SERVICES = [name for name, svc in SERVICES.items() if "build" in svc]
SETTINGS_CLASSES: list[type[FtiSettings]] = [
    FtiSettings,
    FeatureStreamSettings,
    StackSettings,
    InferenceSettings,
    PredictSettings,
    RegistrySettings,
    TrainerSettings,
]
KNOWN_VARIABLES = {name for cls in SETTINGS_CLASSES for name in cls.env_names()}


def _resolve(args: list[str]) -> click.Context:
    """Parse `fti <args>` down to the leaf command without running it; raises on unknown commands/options."""
    ctx = cli.make_context("fti", list(args), resilient_parsing=False)
    command: click.Command = cli
    while isinstance(command, click.Group):
        name, sub, rest = command.resolve_command(ctx, ctx.protected_args + ctx.args)
        assert sub is not None, f"fti has no subcommand {name}"
        command = sub
        ctx = sub.make_context(name or "", rest, parent=ctx)
    return ctx


def test_every_pipeline_service_runs_from_the_one_dockerfile() -> None:
    assert (ROOT / "Dockerfile").exists()
    assert {"features-worker", "promoter", "inference", "trainer"} <= set(FTI_SERVICES)
    for name in FTI_SERVICES:
        svc = SERVICES[name]
        assert svc["build"] == ".", name
        assert svc["image"] == "fti-kafka:latest", name
    assert SERVICES["trainer"]["profiles"] == ["train"], "the trainer is a one-shot service behind a profile"


@pytest.mark.parametrize("name", FTI_SERVICES)
def test_service_command_is_a_real_fti_subcommand(name: str) -> None:
    ctx = _resolve(SERVICES[name]["command"])
    assert ctx.command.callback is not None


def test_unknown_subcommands_and_options_are_caught_by_the_check() -> None:
    with pytest.raises(click.UsageError):
        _resolve(["features", "no-such-command"])
    with pytest.raises(click.UsageError):
        _resolve(["stack", "topics", "--no-such-option"])


def test_backing_services_have_images_and_health_checks() -> None:
    for name in ("kafka", "redis"):
        assert ":" in SERVICES[name]["image"], f"{name} image should be pinned to a tag"
        assert SERVICES[name]["healthcheck"]["test"], name
    env = SERVICES["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller", "KRaft, no ZooKeeper"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_ports_volumes_dependencies_and_settings_are_consistent() -> None:
    declared_volumes = set(COMPOSE["volumes"])
    for name, svc in SERVICES.items():
        for port in svc.get("ports", []):
            host, container = str(port).split(":")
            assert 0 < int(host) < 65536 and 0 < int(container) < 65536, (name, port)
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            assert source in declared_volumes, f"{name}: volume {source} is not declared"
        for dep in svc.get("depends_on", {}):
            assert dep in SERVICES, f"{name} depends on unknown service {dep}"
        for key in svc.get("environment", {}):
            if key.startswith("FTI_"):
                assert key in KNOWN_VARIABLES, f"{name}: unknown (or deprecated) setting {key}"
    assert {"offline", "registry"} <= declared_volumes


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode != 0,
    reason="the Docker compose plugin is not installed; the schema checks above stand in for it",
)
def test_docker_compose_config_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker", "compose", "config", "-q"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_the_image_compiles_the_hot_path_with_the_mypy_the_dev_extras_pin() -> None:
    """The Dockerfile installs mypy only to compile (fti_core.native); a pin of its own would
    drift from the one the code is type-checked and compiled with everywhere else."""
    import re
    import tomllib

    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    pinned = [d for d in dev if re.fullmatch(r"mypy==[\w.]+", d)]
    in_image = re.findall(r'"(mypy==[\w.]+)"', (ROOT / "Dockerfile").read_text())
    assert len(pinned) == 1 and in_image == pinned
