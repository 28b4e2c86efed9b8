"""A simulation's configuration: one pydantic model, read from TOML, every field overridable.

``fedge simulate --config FILE`` reads a TOML file shaped like :class:`SimulationConfig`; flags
override it, and ``--set a.b=value`` overrides any field by its dotted path (the value is read as
JSON when it parses, else as a string), e.g. ``--set population.never_return=0``.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from simulator.device_data import PartitionConfig
from simulator.population import PopulationConfig


class TraceConfig(BaseModel):
    """FedScale-format device traces to replay instead of the synthetic population."""

    model_config = ConfigDict(extra="forbid")

    device_capacity: Path | None = Field(
        None,
        description="pickle/JSON dict client -> {computation: ms/example, communication: kbps}",
    )
    behaviour: Path | None = Field(
        None,
        description="pickle/JSON dict client -> {duration, active: [...], inactive: [...], "
        "finish_time}",
    )


class SimulationConfig(BaseModel):
    """Everything about one simulation run."""

    model_config = ConfigDict(extra="forbid")

    devices: int = Field(1000, ge=1, description="registered devices in the population")
    hours: float = Field(24.0, gt=0, description="virtual duration")
    mode: Literal["async", "sync"] = "async"
    model: str = Field("mnist_mlp", description="zoo model whose plan the devices train")
    dataset: str = Field("mnist", description="mnist, digits, synthetic_A_B or synthetic_iid")
    seed: int = 0
    out: Path = Path("sim-out")
    backend: Literal["local", "process", "ray"] = "process"
    workers: int = Field(0, ge=0, description="training processes; 0 = one per core")
    ray_address: str | None = Field(None, description="Ray cluster to join; None = a local one")
    server: str | None = Field(None, description="a live coordinator URL (runs in real time)")
    admin_token: str | None = None
    plans_dir: Path = Path("build/plans")
    target_accuracy: float = Field(0.85, gt=0, le=1)
    eval_every_minutes: float = Field(30.0, gt=0)
    first_check_in_minutes: float = Field(
        10.0, ge=0, description="devices first check in spread over this many minutes"
    )
    sweep_every_seconds: float = Field(15.0, gt=0)
    fairness_devices: int = Field(1000, ge=10, description="devices sampled for fairness")
    rounds: int | None = Field(None, ge=1, description="stop after this many versions")
    cohort: int | None = Field(None, ge=1, description="sync: reports per round")
    progress: bool = True
    partition: PartitionConfig = Field(default_factory=PartitionConfig)
    population: PopulationConfig = Field(default_factory=PopulationConfig)
    traces: TraceConfig = Field(default_factory=TraceConfig)
    job: dict[str, Any] = Field(
        default_factory=dict,
        description="JobCreate fields (aggregation, population, task) layered over the defaults",
    )
    coordinator: dict[str, Any] = Field(
        default_factory=dict, description="coordinator Settings overrides (in-process only)"
    )

    @model_validator(mode="after")
    def _sync_needs_cohort(self) -> SimulationConfig:
        if self.mode == "async" and self.cohort is not None:
            raise ValueError("--cohort is the size of a synchronous round; use it with --mode sync")
        return self

    def job_config(self, plan_id: int) -> dict[str, Any]:
        """The JobCreate body for this run: defaults for the mode, then the ``job`` table."""
        if self.mode == "async":
            aggregation: dict[str, Any] = {
                "mode": "async",
                "concurrency": 10,
                "buffer_size": 10,
                "max_staleness": 20,
                "staleness": "polynomial",
            }
        else:
            aggregation = {
                "mode": "sync",
                "target": self.cohort or 20,
                "over_selection": 1.3,
                "round_seconds": 600.0,
            }
        body: dict[str, Any] = {
            "name": f"simulation seed {self.seed}",
            "plan_id": plan_id,
            "aggregation": aggregation,
            "population": {"min_examples": 1},
            "task": {"local_epochs": 2, "lease_seconds": 900.0, "heartbeat_seconds": 60.0},
        }
        if self.rounds is not None:
            body["max_versions"] = self.rounds
        return _merge(body, self.job)


def load(path: Path | None, overrides: dict[str, Any]) -> SimulationConfig:
    """Read ``path`` (TOML) if given, apply dotted-path ``overrides``, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"no config file at {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path} is not valid TOML: {exc}") from None
    for dotted, value in overrides.items():
        _assign(raw, dotted.split("."), value)
    return SimulationConfig.model_validate(raw)


def parse_assignment(text: str) -> tuple[str, Any]:
    """``a.b=value`` -> ("a.b", value), the value read as JSON when it parses."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def _assign(tree: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
        if not isinstance(tree, dict):
            raise ValueError(f"cannot set {'.'.join(path)}: {key} is not a table")
    tree[path[-1]] = value


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
