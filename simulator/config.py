"""Every model of a simulation's configuration, read from TOML, every field overridable.

``fedge simulate --config FILE`` reads a TOML file shaped like :class:`SimulationConfig`; flags
override it, and ``--set a.b=value`` overrides any field by its dotted path (the value is read as
JSON when it parses, else as a string), e.g. ``--set population.never_return=0``.

This module is the simulator's bottom layer: it imports nothing of the simulator, and the modules
that use a config (population, device data, traces, the run) import it from here. The ``job``
table is checked against the coordinator's own ``JobCreate`` when the config is loaded, so a typo
in it fails before the run starts, with the field named, instead of as a 422 mid-run.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

# The simulator's one import of the coordinator's job schema (pydantic only, no web stack).
from coordinator.config import CompressionConfig, JobCreate


class PartitionConfig(BaseModel):
    """How examples are spread over devices."""

    model_config = ConfigDict(extra="forbid")

    scheme: Literal["iid", "dirichlet", "shards"] = "dirichlet"
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (small = skewed)")
    shards_per_device: int = Field(2, ge=1)
    sizes: Literal["equal", "power_law"] = "power_law"
    mean_examples: float = Field(200.0, gt=0, description="mean examples per device")
    min_examples: int = Field(8, ge=1)
    power_law_exponent: float = Field(1.5, gt=0)
    test_size: int = Field(1000, ge=1, description="held-out examples for global accuracy")


class Tier(BaseModel):
    """One hardware tier."""

    model_config = ConfigDict(extra="forbid")

    name: str
    share: float = Field(gt=0)
    compute_factor: float = Field(gt=0, description="training time per example vs the reference")
    memory_mb: float = Field(gt=0)
    up_mbps: float | None = Field(
        None, gt=0, description="median uplink of the tier; None: the population's"
    )
    down_mbps: float | None = Field(
        None, gt=0, description="median downlink of the tier; None: the population's"
    )
    rtt_ms: float | None = Field(
        None, gt=0, description="median round-trip latency of the tier; None: the population's"
    )


DEFAULT_TIERS = [
    Tier(name="high", share=0.25, compute_factor=1.0, memory_mb=8192),
    Tier(name="mid", share=0.5, compute_factor=2.5, memory_mb=4096),
    Tier(name="low", share=0.25, compute_factor=6.0, memory_mb=2048),
]


PHASES = ("download", "training", "upload")  # where a dropped task can stop
CRASH_AFTER_UPLOAD = 0.01  # the chance of a crash after upload when only dropout is given


class PopulationConfig(BaseModel):
    """Parameters of the device population (their sources: :mod:`simulator.population`)."""

    model_config = ConfigDict(extra="forbid")

    tiers: list[Tier] = Field(default_factory=lambda: list(DEFAULT_TIERS))
    compute_jitter: float = Field(0.25, ge=0, description="σ of log-normal jitter in a tier")
    reference_ms_per_example: float = Field(
        40.0, gt=0, description="training ms per example (per epoch) on a reference device"
    )
    down_mbps_median: float = Field(20.0, gt=0)
    up_mbps_median: float = Field(5.0, gt=0)
    bandwidth_sigma: float = Field(0.8, ge=0)
    rtt_ms_median: float = Field(60.0, gt=0)
    diurnal: bool = Field(True, description="False: every device is always eligible")
    night_share: float = Field(0.5, ge=0, le=1, description="devices whose window is at night")
    night_start_hour: float = Field(22.0, ge=0, lt=24)
    night_start_sigma_hours: float = Field(3.0, ge=0)
    night_hours_median: float = Field(6.0, gt=0)
    day_hours_median: float = Field(3.0, gt=0)
    window_sigma: float = Field(0.5, ge=0, description="σ of the log-normal window length")
    dropout: float = Field(0.1, ge=0, le=1, description="chance a task is cut short silently")
    dropout_phases: dict[str, float] = Field(
        default_factory=lambda: {"download": 0.2, "training": 0.6, "upload": 0.2}
    )
    crash_after_upload: float | None = Field(
        None,
        ge=0,
        le=1,
        description="chance a device dies after sending its update, before reading the answer; "
        f"None: {CRASH_AFTER_UPLOAD} when dropout > 0, none at dropout 0 (no dropout at all)",
    )
    never_return: float = Field(0.05, ge=0, le=1, description="share of drops that are final")

    @property
    def crash_chance(self) -> float:
        """The chance of a crash after upload this population runs with (see the field)."""
        if self.crash_after_upload is not None:
            return self.crash_after_upload
        return CRASH_AFTER_UPLOAD if self.dropout > 0 else 0.0

    @model_validator(mode="after")
    def _phases_known(self) -> PopulationConfig:
        unknown = set(self.dropout_phases) - set(PHASES)
        if unknown or not self.dropout_phases or sum(self.dropout_phases.values()) <= 0:
            raise ValueError(
                f"dropout_phases needs positive shares for some of {PHASES}, got "
                f"{self.dropout_phases}"
            )
        return self


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


class AttackConfig(BaseModel):
    """Malicious devices and what they send (:mod:`simulator.attacks`); none by default.

    ``scale`` multiplies a malicious device's trained delta by ``scale`` (×10 by default);
    ``sign_flip`` sends its negation; ``backdoor`` stamps a trigger (a ``patch`` × ``patch``
    square of ``trigger_value`` in an image's bottom-right corner, or the last ``patch``
    features of a vector) on a share of its examples, relabels them ``target_class``, trains on
    them and sends that delta × ``boost``. The malicious devices are drawn from the run's seed.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["none", "scale", "sign_flip", "backdoor"] = "none"
    fraction: float = Field(0.0, ge=0, le=1, description="share of the devices that are malicious")
    scale: float = Field(10.0, gt=0, description="scale: the factor a malicious delta is sent at")
    target_class: int = Field(0, ge=0, description="backdoor: the label triggered inputs get")
    patch: int = Field(4, ge=1, description="backdoor: the trigger's side (or features stamped)")
    trigger_value: float = Field(1.0, description="backdoor: the stamped pixels' value")
    poisoned_share: float = Field(
        0.5, gt=0, le=1, description="backdoor: share of a malicious device's examples stamped"
    )
    boost: float = Field(
        1.0,
        gt=0,
        description="backdoor: factor the poisoned delta is sent at (model replacement, "
        "Bagdasaryan et al., AISTATS 2020); 1: none",
    )

    @model_validator(mode="after")
    def _fraction_needs_an_attack(self) -> AttackConfig:
        if self.kind == "none" and self.fraction > 0:
            raise ValueError(
                f"attack.kind: name the attack the {self.fraction:g} malicious share makes "
                "(scale, sign_flip or backdoor)"
            )
        return self


class PersonalizationConfig(BaseModel):
    """On-device personalization at the end of a run (:mod:`device_sdk.personalize`)."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(20, ge=1, description="local fine-tuning steps (mini-batches)")
    learning_rate: float = Field(0.05, gt=0, description="plain-SGD step size of the fine-tune")
    batch_size: int = Field(32, ge=1)
    validation_fraction: float = Field(
        0.2, gt=0, lt=1, description="share of a device's examples held to judge the fine-tune"
    )
    scope: Literal["head", "all"] = Field(
        "head", description="fine-tune the last layer only (FedPer/FedRep) or every weight"
    )


class AuditConfig(BaseModel):
    """The privacy audit of a run (:mod:`simulator.audit`, docs/privacy.md "The audit"); off.

    ``held_out_devices`` devices, drawn from the run's seed, are kept out of the population
    (they never check in): their examples are the non-members of the membership-inference
    attack. ``canaries`` other devices send a canary instead of their trained delta: a fixed
    random unit direction × the task's clip norm C (``canary_norm`` when the task clips
    nothing); ``held_out_canaries`` more directions are drawn and never sent (Andrew et al.,
    ICLR 2024).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="run the audit (fedge simulate --audit)")
    canaries: int = Field(20, ge=0, description="devices whose update is a canary direction")
    held_out_canaries: int = Field(
        1000, ge=2, description="canary directions drawn but never inserted (the null)"
    )
    held_out_devices: int = Field(
        50, ge=0, description="devices kept out of the population: the attack's non-members"
    )
    canary_norm: float = Field(
        1.0, gt=0, description="a canary's norm when the task sets no clip_norm (no DP)"
    )
    delta: float = Field(
        1e-5, gt=0, lt=1, description="δ of the empirical ε when the run has no DP (else the job's)"
    )
    bootstrap: int = Field(1000, ge=10, description="resamples of the AUC's bootstrap interval")


# The run's fields a job's defaults are made from (validated before ``job``).
_JOB_INPUTS = {"devices", "mode", "seed", "rounds", "cohort", "dp_epsilon", "server", "codec"}


class SimulationConfig(BaseModel):
    """Everything about one simulation run."""

    model_config = ConfigDict(extra="forbid")

    devices: int = Field(1000, ge=1, description="registered devices in the population")
    hours: float = Field(24.0, gt=0, description="virtual duration")
    mode: Literal["async", "sync"] = "async"
    model: str = Field("mnist_mlp", description="zoo model whose plan the devices train")
    dataset: str = Field(
        "mnist", description="mnist, digits, synthetic_A_B, synthetic_iid or shakespeare"
    )
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
    dp_epsilon: float | None = Field(
        None,
        gt=0,
        description="run a DP experiment: a privacy section calibrated for this ε, which is "
        "also the budget (docs/privacy.md); the job table's privacy fields override it",
    )
    codec: str | None = Field(
        None,
        description="uplink codecs the job allows, comma-separated (rot4, or float32,rot4 for "
        "a per-device choice under job.compression's budget); None: float32",
    )
    progress: bool = True
    poisoned_version: int | None = Field(
        None,
        ge=1,
        description="a rollout scenario's bad version: every update trained from the version "
        "before it is flipped and scaled (simulator.fleet.POISON_SCALE)",
    )
    canary_versions: list[int] = Field(
        default_factory=list,
        description="versions the simulated operator pushes to canary (fedge admin promote "
        "--to canary) once they exist and no other canary is out; the gates take it from there",
    )
    partition: PartitionConfig = Field(default_factory=PartitionConfig)
    population: PopulationConfig = Field(default_factory=PopulationConfig)
    traces: TraceConfig = Field(default_factory=TraceConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    personalization: PersonalizationConfig | None = Field(
        None,
        description="fine-tune the final model on each fairness-sampled device, keep it if "
        "better on the device's validation split, and report per-device gains (--personalize)",
    )
    audit: AuditConfig = Field(default_factory=AuditConfig)
    job: dict[str, Any] = Field(
        default_factory=dict,
        description="JobCreate fields (aggregation, population, task) layered over the defaults; "
        "checked against the coordinator's JobCreate when the config is loaded",
    )
    coordinator: dict[str, Any] = Field(
        default_factory=dict, description="coordinator Settings overrides (in-process only)"
    )

    @field_validator("job")
    @classmethod
    def _job_fits_the_coordinator(cls, job: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # The fields the job's defaults depend on come first; if one failed, its error is shown.
        if {
            "devices",
            "mode",
            "seed",
            "rounds",
            "cohort",
            "dp_epsilon",
            "server",
            "codec",
        } <= info.data.keys():
            _job_create(
                _job_body(
                    mode=info.data["mode"],
                    seed=info.data["seed"],
                    rounds=info.data["rounds"],
                    cohort=info.data["cohort"],
                    plan_id=1,  # a stand-in: the plan is published when the run starts
                    dp=_dp_defaults(info.data),
                    codec=info.data["codec"],
                ),
                job,
            )
        return job

    @field_validator("codec")
    @classmethod
    def _codecs_known(cls, codec: str | None) -> str | None:
        # Checked here too: the job validator does not run when there is no job table.
        if codec is not None:
            CompressionConfig(codecs=[name.strip() for name in codec.split(",")])
        return codec

    @model_validator(mode="after")
    def _sync_needs_cohort(self) -> SimulationConfig:
        if self.mode == "async" and self.cohort is not None:
            raise ValueError("--cohort is the size of a synchronous round; use it with --mode sync")
        return self

    @model_validator(mode="after")
    def _audit_leaves_a_population(self) -> SimulationConfig:
        audit = self.audit
        taken = audit.canaries + audit.held_out_devices
        if audit.enabled and taken * 2 > self.devices:
            raise ValueError(
                f"audit: {audit.canaries} canaries + {audit.held_out_devices} held-out devices "
                f"take more than half of the {self.devices} devices; lower audit.canaries or "
                "audit.held_out_devices, or raise --devices"
            )
        return self

    def job_config(self, plan_id: int) -> JobCreate:
        """The job this run creates: defaults for the mode, then the ``job`` table over them."""
        defaults = _job_body(
            mode=self.mode,
            seed=self.seed,
            rounds=self.rounds,
            cohort=self.cohort,
            plan_id=plan_id,
            dp=_dp_defaults(self.model_dump()),
            codec=self.codec,
        )
        return _job_create(defaults, self.job)


def _dp_defaults(fields: dict[str, Any]) -> dict[str, Any] | None:
    """What ``dp_epsilon`` needs to know of the run, or None for a run without privacy."""
    if fields.get("dp_epsilon") is None:
        return None
    return {
        "epsilon": fields["dp_epsilon"],
        "devices": fields["devices"],
        "seeded": fields.get("server") is None,  # a live coordinator refuses a noise seed
    }


def _privacy_section(
    dp: dict[str, Any], *, per_version: int, rounds: int | None, seed: int
) -> dict[str, Any]:
    """A DP job's privacy section for ``--dp-epsilon``: ε is both the target and the budget.

    Capped participation (the model FedBuff's arrivals fit, and sync rounds too): each device
    contributes at most once in any W versions, W = N / (2·K), so half the population can
    fill a window. δ = min(1e-5, 0.1/N), below 1/N. Fixed C = 1 (``--set
    job.privacy.clipping.clip_norm=…`` to change it); z is calibrated for ``rounds`` versions
    (50 when unset). The noise is seeded from the run's seed in-process, so a run repeats.
    """
    devices = int(dp["devices"])
    section: dict[str, Any] = {
        "mechanism": "gaussian",
        "participation": {
            "model": "capped",
            "population": devices,
            "window": max(1, devices // (2 * per_version)),
        },
        "target_epsilon": dp["epsilon"],
        "epsilon_max": dp["epsilon"],
        "planned_versions": rounds or 50,
        "delta": min(1e-5, 0.1 / devices),
        "clipping": {"kind": "fixed", "clip_norm": 1.0},
    }
    if dp["seeded"]:
        section["noise_seed"] = seed
    return section


def _job_body(
    *,
    mode: str,
    seed: int,
    rounds: int | None,
    cohort: int | None,
    plan_id: int,
    dp: dict[str, Any] | None = None,
    codec: str | None = None,
) -> dict[str, Any]:
    """The JobCreate fields a run of ``mode`` sets before its ``job`` table is layered on."""
    if mode == "async":
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
            "target": cohort or 20,
            "over_selection": 1.3,
            "round_seconds": 600.0,
        }
    body: dict[str, Any] = {
        "name": f"simulation seed {seed}",
        "plan_id": plan_id,
        "aggregation": aggregation,
        "population": {"min_examples": 1},
        "task": {"local_epochs": 2, "lease_seconds": 900.0, "heartbeat_seconds": 60.0},
    }
    if rounds is not None:
        body["max_versions"] = rounds
    if codec is not None:  # lease seeds derived from the run's, so a run repeats
        codecs = [name.strip() for name in codec.split(",")]
        body["compression"] = {"codecs": codecs, "seed": seed}
    if dp is not None:
        per_version = aggregation.get("buffer_size") or aggregation["target"]
        aggregation["weighting"] = "uniform"
        body["privacy"] = _privacy_section(dp, per_version=per_version, rounds=rounds, seed=seed)
    return body


def _job_create(defaults: dict[str, Any], table: dict[str, Any]) -> JobCreate:
    """``table`` over ``defaults``, validated as the coordinator will; errors name job.FIELD."""
    try:
        return JobCreate.model_validate(_merge(defaults, table))
    except ValidationError as exc:
        problems = "; ".join(
            f"job.{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        raise ValueError(problems) from None


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
