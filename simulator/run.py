"""One simulation run: set up data, devices and a coordinator, drive the clock, write the report."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coordinator.admin_client import AdminClient
from device_sdk.client import CoordinatorClient
from device_sdk.plan_runner import PlanRunner
from device_sdk.trainer import evaluate
from fedge.logs import native_chatter_dropped
from fedge.manifest import PlanManifest, manifest_path_for
from simulator.attacks import Adversary, backdoor_examples
from simulator.audit import AuditPlan, run_audit
from simulator.clock import RunClock, VirtualClock, WallClock
from simulator.config import SimulationConfig
from simulator.device_data import DeviceData
from simulator.events import Event, EventKind
from simulator.fleet import RUNTIME, SDK_VERSION, Fleet
from simulator.inprocess import ADMIN_TOKEN, InProcessCoordinator
from simulator.personalization import DeviceScores, personalize_devices
from simulator.population import Population, synthesize
from simulator.training import DataSpec, LocalTrainers, ProcessTrainers, Trainers, Worker

log = logging.getLogger("fedge.simulator")


@dataclass
class Outcome:
    """Everything a report needs."""

    config: SimulationConfig
    fleet: Fleet
    population: Population
    rows: list[dict[str, Any]]
    history: dict[str, Any]
    fairness: list[float]
    wall_seconds: float
    virtual_seconds: float
    peak_rss_mb: float
    data_mode: str
    interrupted: bool = False
    """Ctrl-C stopped the run early: the figures are those of the part that ran."""
    adversary: Adversary | None = None
    """The malicious devices and their attack (``config.attack``), if any."""
    registry: dict[str, Any] | None = None
    """Federated evaluation per version beside the central (oracle) one, and the stage moves."""
    personalization: list[DeviceScores] | None = None
    """Per-device accuracy before and after personalizing, when the config asks for it."""
    fairness_devices: list[int] = field(default_factory=list)
    """The device each of ``fairness``'s scores is of (its tier is the population's)."""
    audit: dict[str, Any] | None = None
    """The privacy audit's figures (``config.audit``, :func:`simulator.audit.run_audit`)."""


def ensure_plan(config: SimulationConfig) -> Path:
    """The plan file of ``config.model``, exported (with TensorFlow) if not there yet."""
    path = config.plans_dir / f"{config.model}.tflite"
    if not path.exists() or not manifest_path_for(path).exists():
        log.info("exporting %s to %s", config.model, config.plans_dir)
        with native_chatter_dropped():  # TensorFlow's start-up and SavedModel lines
            from models.export import export_plan

            export_plan(config.model, config.plans_dir)
    return path


def simulate(config: SimulationConfig) -> Outcome:
    """Run ``config`` to its end and return what happened (the report is written by the caller)."""
    started = time.perf_counter()
    config.out.mkdir(parents=True, exist_ok=True)
    blobs = config.out / "blobs"
    blobs.mkdir(exist_ok=True)
    plan_path = ensure_plan(config)
    manifest = PlanManifest.from_json(manifest_path_for(plan_path).read_text())
    data = DeviceData(config.dataset, config.devices, config.partition, seed=config.seed)
    _check_shapes(manifest, data)
    population = synthesize(
        config.devices,
        config.population,
        num_examples=data.sizes,
        rng=np.random.default_rng([config.seed, 1]),
    )
    if config.traces.device_capacity or config.traces.behaviour:
        from simulator.traces import apply_traces

        apply_traces(population, config.traces, rng=np.random.default_rng([config.seed, 2]))
    manifests = {manifest.plan_sha256: manifest_path_for(plan_path).read_text()}
    adversary = Adversary.draw(config.attack, devices=config.devices, seed=config.seed)
    malicious = frozenset() if adversary is None else adversary.malicious
    audit_plan = AuditPlan.draw(
        config.audit, devices=config.devices, seed=config.seed, exclude=malicious
    )
    if audit_plan is not None:  # the audit's non-members never check in
        population.gone[sorted(audit_plan.held_out)] = True
    with (
        _coordinator(config) as (url, clock, coordinator),
        _trainers(config, data, blobs, manifests, adversary, audit_plan) as trainers,
    ):
        transport = coordinator.transport if coordinator is not None else None
        admin = AdminClient(url, config.admin_token or ADMIN_TOKEN, transport=transport)
        plan = admin.publish_plan(plan_path)
        job_config = config.job_config(int(plan["id"]))
        job = admin.create_job(job_config.model_dump(mode="json", exclude_unset=True))
        client = CoordinatorClient(url, transport=transport, timeout=120)
        if coordinator is not None:  # a live server's devices register as they first come
            tokens = coordinator.register_many(
                config.devices, runtime=RUNTIME, sdk_version=SDK_VERSION
            )
            population.token[:] = np.array(tokens, dtype="S43")
        start = clock.now()
        fleet = Fleet(
            population,
            client=client,
            trainers=trainers,
            blobs=blobs,
            now=clock.now,
            seed=config.seed,
            start=start,
            first_check_in_spread=config.first_check_in_minutes * 60.0,
            poisoned_version=config.poisoned_version,
        )
        evaluator = _Evaluator(plan_path, manifest, data, admin, int(job["id"]), adversary)
        rows, interrupted = _drive(config, fleet, clock, coordinator, evaluator, start)
        final = evaluator.final_weights()
        fairness = evaluator.per_device(final, config.fairness_devices, seed=config.seed)
        personalized = None
        if config.personalization is not None:
            sample = evaluator.sample(config.fairness_devices, seed=config.seed)
            personalized = personalize_devices(
                evaluator.runner, data, final, sample, config.personalization, seed=config.seed
            )
        history = admin.metrics(int(job["id"]))
        registry = evaluator.registry(start)
        audit = None
        if audit_plan is not None:
            audit = _audit(audit_plan, evaluator, final, data, population, history, malicious)
        virtual = clock.now() - start
        client.close()
        admin.close()
    return Outcome(
        config=config,
        fleet=fleet,
        population=population,
        rows=rows,
        history=history,
        fairness=fairness,
        wall_seconds=time.perf_counter() - started,
        virtual_seconds=virtual,
        peak_rss_mb=_peak_rss_mb(),
        data_mode=data.mode,
        interrupted=interrupted,
        adversary=adversary,
        registry=registry,
        personalization=personalized,
        fairness_devices=evaluator.scored_devices,
        audit=audit,
    )


def _audit(
    plan: AuditPlan,
    evaluator: _Evaluator,
    final: np.ndarray,
    data: DeviceData,
    population: Population,
    history: dict[str, Any],
    malicious: frozenset[int],
) -> dict[str, Any]:
    """The privacy audit of the final model (:func:`simulator.audit.run_audit`)."""
    log.info("auditing the final model: membership inference and canaries")
    private = [v["privacy"] for v in history["versions"] if v.get("privacy")]
    evaluator.runner.set_weights(final)
    return run_audit(
        plan,
        infer=evaluator.runner.infer,
        examples=data.examples,
        initial=evaluator.admin.weights(evaluator.job_id, 0),
        final=final,
        contributions=population.contributions,
        privacy=private[-1] if private else None,
        exclude=malicious,
        data_mode=data.mode,
    )


def _drive(
    config: SimulationConfig,
    fleet: Fleet,
    clock: RunClock,
    coordinator: InProcessCoordinator | None,
    evaluator: _Evaluator,
    start: float,
) -> tuple[list[dict[str, Any]], bool]:
    """Pop events until the end; the in-process coordinator's lease sweep is an event too.

    Returns the evaluation rows and whether Ctrl-C (``KeyboardInterrupt``) ended the run
    early: the run then stops at the event it was in, and what ran is still evaluated and
    reported.
    """
    end = start + config.hours * 3600.0
    queue = fleet.queue
    if coordinator is not None:  # a live server sweeps on its own clock
        queue.push(Event(start, EventKind.SWEEP))
    queue.push(Event(start, EventKind.EVALUATE))
    rows: list[dict[str, Any]] = []
    bar = _progress_bar(config)
    try:
        log.info("%d devices, %g virtual hours: running", config.devices, config.hours)
        _pop_events(config, fleet, clock, coordinator, evaluator, start, end, rows, bar)
        interrupted = False
    except KeyboardInterrupt:
        log.warning("interrupted at %.2f virtual hours", (clock.now() - start) / 3600.0)
        interrupted = True
    rows.append(evaluator.row(clock.now() - start, fleet))
    if bar is not None:
        bar.close()
    return rows, interrupted


def _pop_events(
    config: SimulationConfig,
    fleet: Fleet,
    clock: RunClock,
    coordinator: InProcessCoordinator | None,
    evaluator: _Evaluator,
    start: float,
    end: float,
    rows: list[dict[str, Any]],
    bar: Any,
) -> None:
    """The event loop of :func:`_drive`: rows are appended as evaluations come due."""
    queue = fleet.queue
    shown = 0.0
    while True:
        event = queue.pop()
        if event is None or event.when > end:
            clock.advance_to(end)
            break
        when = event.when
        clock.advance_to(when)
        if event.kind is EventKind.SWEEP and coordinator is not None:
            coordinator.sweep()
            queue.push(Event(when + config.sweep_every_seconds, EventKind.SWEEP))
        elif event.kind is EventKind.EVALUATE:
            row = evaluator.row(when - start, fleet)
            rows.append(row)
            evaluator.operate(config.canary_versions)
            if bar is not None:
                bar.update((when - start) / 3600.0 - shown)
                bar.set_postfix(version=row["version"], accuracy=f"{row['accuracy']:.3f}")
                shown = (when - start) / 3600.0
            if row["status"] != "running":
                break
            queue.push(Event(when + config.eval_every_minutes * 60.0, EventKind.EVALUATE))
        else:
            fleet.handle(event)


@contextlib.contextmanager
def _coordinator(
    config: SimulationConfig,
) -> Iterator[tuple[str, RunClock, InProcessCoordinator | None]]:
    """The coordinator's URL, the run's clock, and the in-process coordinator (None if live)."""
    if config.server:
        yield config.server, WallClock(), None
        return
    clock = VirtualClock()
    # A simulated device makes one request at a time, so the per-device rate limit has nothing
    # to catch; the longest retry window is sized for a fleet of thousands (pace steering).
    # A simulated DP job's noise is seeded from the run's seed, so a run repeats exactly.
    settings = {
        "rate_limit_per_minute": 1_000_000,
        "allow_seeded_noise": True,
        "retry_max_seconds": 24 * 3600.0,
        **config.coordinator,
    }
    with InProcessCoordinator(config.out, clock, **settings) as coordinator:
        yield coordinator.base_url, clock, coordinator


@contextlib.contextmanager
def _trainers(
    config: SimulationConfig,
    data: DeviceData,
    blobs: Path,
    manifests: dict[str, str],
    adversary: Adversary | None = None,
    audit: AuditPlan | None = None,
) -> Iterator[Trainers]:
    trainers: Trainers
    workers = config.workers or os.cpu_count() or 1
    if config.backend == "local" or (config.backend == "process" and workers == 1):
        trainers = LocalTrainers(Worker(data, blobs, manifests, adversary, audit))
    elif config.backend == "process":
        spec = DataSpec(
            config.dataset, config.devices, config.partition, config.seed, adversary, audit
        )
        trainers = ProcessTrainers(spec, blobs, manifests, workers=workers)
    else:
        from simulator.ray_backend import RayTrainers

        spec = DataSpec(
            config.dataset, config.devices, config.partition, config.seed, adversary, audit
        )
        trainers = RayTrainers(spec, blobs, manifests, workers=workers, address=config.ray_address)
    try:
        yield trainers
    finally:
        trainers.close()


class _Evaluator:
    """Global accuracy of the current version on the held-out test set, and per device."""

    def __init__(
        self,
        plan_path: Path,
        manifest: PlanManifest,
        data: DeviceData,
        admin: AdminClient,
        job_id: int,
        adversary: Adversary | None = None,
    ) -> None:
        self.runner = PlanRunner(plan_path.read_bytes(), manifest)
        self.data = data
        self.admin = admin
        self.job_id = job_id
        self._scored: tuple[int, float, float] | None = None
        attack = None if adversary is None else adversary.config
        # A backdoor's held-out probe: other classes' test examples, stamped with the trigger.
        self._backdoor = (
            backdoor_examples(data.test.x, data.test.y, attack)
            if attack is not None and attack.kind == "backdoor"
            else None
        )
        self._backdoor_scored: tuple[int, float] | None = None
        self.scored_devices: list[int] = []
        """The devices :meth:`per_device` scored, in the order of its scores."""

    def row(self, seconds: float, fleet: Fleet) -> dict[str, Any]:
        job = self.admin.job(self.job_id)
        version = int(job["current_version"])
        if self._scored is None or self._scored[0] != version:
            self.runner.set_weights(self.admin.weights(self.job_id, version))
            result = evaluate(self.runner, self.data.test.x, self.data.test.y)
            self._scored = (version, result.loss, result.accuracy)
        stats = fleet.stats
        extra = {} if self._backdoor is None else {"backdoor_success": self.backdoor(version)}
        return {
            "virtual_hours": seconds / 3600.0,
            "version": version,
            "status": job["status"],
            "accuracy": self._scored[2],
            "loss": self._scored[1],
            "check_ins": stats.check_ins,
            "tasks": stats.tasks,
            "accepted": stats.accepted,
            "rejected": sum(stats.rejected.values()),
            "dropped": sum(stats.dropped.values()),
            "busy_devices": len(fleet.busy),
            "bytes_up": stats.bytes_up,
            "bytes_down": stats.bytes_down,
            **extra,
        }

    def backdoor(self, version: int) -> float:
        """The backdoor's success on ``version``: stamped inputs classified as its target."""
        assert self._backdoor is not None
        if self._backdoor_scored is None or self._backdoor_scored[0] != version:
            self.runner.set_weights(self.admin.weights(self.job_id, version))
            success = evaluate(self.runner, *self._backdoor).accuracy
            self._backdoor_scored = (version, success)
        return self._backdoor_scored[1]

    def operate(self, canary_versions: list[int]) -> None:
        """The simulated operator: push the next listed version to canary once it exists.

        Only a candidate, and only while no other version is out as a canary (one rollout at
        a time); the gates widen or roll it back from there.
        """
        if not canary_versions:
            return
        registry = self.admin.registry(self.job_id)
        stages = {int(v["lineage"]["version"]): v["stage"] for v in registry["versions"]}
        if "canary" in stages.values():
            return
        for number in canary_versions:
            if stages.get(number) == "candidate":
                reason = "pushed to canary by the operator (scenario)"
                self.admin.promote(self.job_id, number, to="canary", reason=reason)
                return

    def registry(self, start: float) -> dict[str, Any]:
        """Federated evaluation per version beside its central accuracy; the stage moves.

        The moves' times are hours since ``start``.
        """
        registry = self.admin.registry(self.job_id)
        versions = []
        for entry in registry["versions"]:
            federated = entry["evaluation"]
            if federated is None:
                continue
            number = int(entry["lineage"]["version"])
            self.runner.set_weights(self.admin.weights(self.job_id, number))
            central = evaluate(self.runner, self.data.test.x, self.data.test.y)
            versions.append(
                {
                    "version": number,
                    "stage": entry["stage"],
                    "reports": federated["reports"],
                    "federated_mean_accuracy": federated["mean_accuracy"],
                    "federated_worst10_accuracy": federated["worst10_accuracy"],
                    "federated_mean_loss": federated["mean_loss"],
                    "central_accuracy": central.accuracy,
                    "central_loss": central.loss,
                }
            )
        moves = [
            {
                "hours": (float(m["at"]) - start) / 3600.0,
                "version": m["version"],
                "from": m["from_stage"],
                "to": m["to_stage"],
                "actor": m["actor"],
                "reason": m["reason"],
            }
            for m in registry["history"]
        ]
        return {"live": registry["live"], "versions": versions, "moves": moves}

    def final_weights(self) -> np.ndarray:
        version = int(self.admin.job(self.job_id)["current_version"])
        weights: np.ndarray = self.admin.weights(self.job_id, version)
        return weights

    def sample(self, count: int, *, seed: int) -> np.ndarray:
        """The fairness sample: up to ``count`` devices, the same ones for the same seed."""
        total = self.data.num_devices
        rng = np.random.default_rng([seed, 13])
        return np.sort(rng.choice(total, size=min(count, total), replace=False))

    def per_device(self, weights: np.ndarray, count: int, *, seed: int) -> list[float]:
        """Accuracy of ``weights`` on held-out data of up to ``count`` sampled devices.

        Each device is scored on test examples drawn with its own label mix (or its own test
        split, for generated data), not on the examples it trained on.
        """
        self.runner.set_weights(weights)
        scores = []
        for device in self.sample(count, seed=seed):
            x, y = self.data.held_out(int(device))
            if len(y):
                scores.append(evaluate(self.runner, x, y).accuracy)
                self.scored_devices.append(int(device))
        return scores


def _check_shapes(manifest: PlanManifest, data: DeviceData) -> None:
    want = tuple(manifest.inputs["x"].shape[1:])
    have = tuple(data.test.x.shape[1:])
    if want != have:
        raise ValueError(
            f"plan {manifest.name!r} takes inputs of shape {want}, but the dataset's examples "
            f"are {have}; pick a model that fits the dataset"
        )
    if manifest.num_classes != data.num_classes:
        raise ValueError(
            f"plan {manifest.name!r} has {manifest.num_classes} classes, the dataset "
            f"{data.num_classes}"
        )


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024.0


def _progress_bar(config: SimulationConfig) -> Any:
    if not config.progress:
        return None
    from tqdm import tqdm

    if config.hours <= 2:  # a short run reads better in minutes
        return _Minutes(tqdm(total=round(config.hours * 60, 2), unit="min", desc="time"))
    return tqdm(total=config.hours, unit="h", desc="virtual time", leave=True)


class _Minutes:
    """A progress bar fed hours that shows minutes."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def update(self, hours: float) -> None:
        self.bar.update(round(hours * 60, 2))

    def set_postfix(self, **values: Any) -> None:
        self.bar.set_postfix(**values)

    def close(self) -> None:
        self.bar.close()
