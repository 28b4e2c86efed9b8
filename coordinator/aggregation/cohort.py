"""Adaptive over-selection and reporting deadlines for synchronous rounds.

Bonawitz et al. (SysML 2019, §4) over-select a fixed 130 % with static time windows and name
dynamic adjustment as future work. Here both are learned from the job's own closed rounds:

- report times (issue → upload) are modelled as log-normal, fitted by EM with the devices that
  were cut short treated as right-censored — rounds that close at their target never show the
  slow tail, and ignoring that biases every estimate towards fast devices;
- the **reporting deadline** is a high quantile of that model, never beyond the configured
  ``round_seconds``: rounds stop waiting on dead devices;
- the **cohort** is the smallest ``n`` with ``P[Binomial(n, q) ≥ target] ≥ goal``, where ``q`` is
  the chance that a selected device reports by that deadline: ``(1 − never) · F(deadline)``.
  Over-selecting less than that fails rounds; more wastes the work of devices cut when the
  target is reached. With lease heartbeats a dropout is noticed within a few intervals and its
  place handed to the next device that checks in, so the cohort need not cover every dropout
  up front: the chance a *place* reports counts its replacements, and where the surplus
  would waste too much work the deadline leaves room for one (below).

Asynchronous jobs (FedBuff) learn the same way how many leases to keep out: a lease held by a
device that will vanish does no useful work, so ``C`` useful slots need more than ``C`` leases.
:func:`plan_concurrency` fits the same report-time model to the job's recent leases (the live
ones right-censored) for the dropout rate p̂, and :func:`over_commit` turns it into a lease count.

Pure functions over plain numbers (stdlib only); the service reads the history from the database
(``coordinator.services.rounds.history``, ``coordinator.services.leasing.lease_history``) and
feeds it in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MIN_OBSERVATIONS = 20  # before this many outcomes, the configured factor and deadline are used


@dataclass(frozen=True)
class RoundHistory:
    """Outcomes of selected devices in recent closed rounds.

    ``report_seconds``: issue-to-upload time of each device that reported. ``censored_seconds``:
    how long each device cut short had been working — cut when its round reached the target, or
    when the deadline expired its lease — it would have reported later, or never. ``aborted``:
    devices that reported giving up (they never report).
    """

    report_seconds: Sequence[float]
    censored_seconds: Sequence[float]
    aborted: int

    @property
    def observations(self) -> int:
        """Selected devices in the history."""
        return len(self.report_seconds) + len(self.censored_seconds) + self.aborted


@dataclass(frozen=True)
class CohortPlan:
    """How many devices a round selects and how long it waits for their reports."""

    to_select: int
    deadline_seconds: float
    completion_probability: float  # the model's P[round reaches its target]
    report_probability: float  # q: one selected device reports in time
    learned: bool  # False: not enough history, the configured values were used


@dataclass(frozen=True)
class ReportTimeModel:
    """A device reports with probability ``1 − never`` after log-normal(mu, sigma) seconds."""

    mu: float
    sigma: float
    never: float

    def reports_by(self, seconds: float) -> float:
        """P[a selected device has reported after ``seconds``]."""
        if seconds <= 0:
            return 0.0
        z = (math.log(seconds) - self.mu) / self.sigma
        return (1 - self.never) * 0.5 * math.erfc(-z / math.sqrt(2))

    def quantile(self, p: float) -> float:
        """Seconds by which a share ``p`` of the devices that do report have reported."""
        return math.exp(self.mu + self.sigma * _normal_quantile(p))


def fit_report_times(history: RoundHistory, *, iterations: int = 300) -> ReportTimeModel:
    """Fit the report-time model by EM, treating cut-short devices as right-censored.

    A mixture-cure model: a selected device never reports with probability ``never`` (it
    dropped out, silently or not), else it reports after log-normal(mu, sigma) seconds.
    Rounds that close at their target cut the slowest devices; dropping those observations, or
    counting them as failures, biases the fit towards fast devices and the deadline towards
    ever shorter values. A censored device says only "not by c": in the E-step it is a
    never-reporter with posterior ``never / (never + (1 − never)·S(c))`` and otherwise a
    log-normal time beyond c. Aborts are known never-reporters.
    """
    logs = [math.log(max(t, 1e-3)) for t in history.report_seconds]
    cuts = [math.log(max(t, 1e-3)) for t in history.censored_seconds]
    total = history.observations
    mu = sum(logs) / len(logs)
    sigma = max(math.sqrt(sum((y - mu) ** 2 for y in logs) / len(logs)), 0.05)
    never = (history.aborted + 1) / (total + 2)
    for _ in range(iterations):
        weight, first, second, silent = float(len(logs)), sum(logs), sum(y * y for y in logs), 0.0
        for c in cuts:
            a = (c - mu) / sigma
            survive = 0.5 * math.erfc(a / math.sqrt(2))
            dead = never / (never + (1 - never) * survive) if never > 0 else 0.0
            silent += dead
            alive = 1.0 - dead
            # A log-time censored at c: E[y] = mu + sigma·λ(a), E[y²] = mu² + sigma² +
            # sigma·(c + mu)·λ(a), with λ the inverse Mills ratio.
            lam = _inverse_mills(a)
            weight += alive
            first += alive * (mu + sigma * lam)
            second += alive * (mu * mu + sigma * sigma + sigma * (c + mu) * lam)
        new_mu = first / weight
        new_sigma = max(math.sqrt(max(second / weight - new_mu * new_mu, 0.0)), 0.05)
        new_never = (history.aborted + silent + 1) / (total + 2)  # Laplace-smoothed
        converged = max(abs(new_mu - mu), abs(new_sigma - sigma), abs(new_never - never)) < 1e-7
        mu, sigma, never = new_mu, new_sigma, new_never
        if converged:
            break
    return ReportTimeModel(mu=mu, sigma=sigma, never=never)


def plan_cohort(
    history: RoundHistory,
    *,
    target: int,
    over_selection: float,
    round_seconds: float,
    goal: float = 0.95,
    deadline_quantile: float = 0.99,
    max_over_selection: float = 3.0,
    detection_seconds: float | None = None,
    max_surplus: float = 0.05,
) -> CohortPlan:
    """The cohort size and deadline for the next round, learned from ``history``.

    The deadline is the time by which ``deadline_quantile`` of the devices that report have
    reported (never beyond ``round_seconds``); the cohort is the smallest that reaches the
    target with probability ``goal`` given the chance a selected device reports by then.

    ``detection_seconds``: with lease heartbeats, a device that drops out is noticed within
    about that long and its place goes to the next device that checks in, so a place in the
    cohort fails only if every device that holds it in turn fails to report in time (a
    dropout is taken to happen half-way through a median task, then to go unnoticed for
    ``detection_seconds``). Places are kept filled, so at the close every surplus place holds
    a device that has trained at least as long as the others and is cut: at least a share
    ``(cohort − target) / cohort`` of the work is wasted, more in practice (the cut devices
    are the slow ones). When that share exceeds ``max_surplus`` the deadline leaves room for
    one replacement — the high quantile plus half a median task
    plus the detection time — so that a place lost at the typical moment is refilled by a
    device that reports as late as anyone else may, and the surplus can shrink. Rounds then
    take longer: this trades round time for device work only where the surplus is large. The
    default ``max_surplus`` is the bound that met the issue's goal (rounds completed, work
    wasted) at every dropout rate and seed ``benchmarks.over_selection`` tried; larger bounds
    wasted more. Room for more refills is not worth it: with the deadline at the whole round
    bound the cohort shrank to the target, rounds waited on their slowest device and fewer
    completed. The figures are in ``benchmarks/RESULTS.md`` ("Adaptive over-selection").
    Without heartbeats (None) a silent device holds its place until the deadline: every
    dropout is a lost place, and the cohort must cover them all.
    """
    if not 0 < goal < 1:
        raise ValueError(f"goal must lie in (0, 1), got {goal}")
    fixed = math.ceil(target * over_selection)
    if history.observations < MIN_OBSERVATIONS or len(history.report_seconds) < 2:
        return CohortPlan(fixed, round_seconds, math.nan, math.nan, learned=False)

    model = fit_report_times(history)
    ceiling = max(target, math.ceil(target * max_over_selection))
    deadline = min(round_seconds, model.quantile(deadline_quantile))
    # With heartbeats: how long a lost place takes to get a new device, on average.
    refill = None if detection_seconds is None else 0.5 * model.quantile(0.5) + detection_seconds
    plan = _smallest_cohort(model, target, deadline, goal, ceiling, refill)
    if refill is not None and (plan.to_select - target) / plan.to_select > max_surplus:
        longer = min(round_seconds, deadline + refill)
        plan = _smallest_cohort(model, target, longer, goal, ceiling, refill)
    return plan


@dataclass(frozen=True)
class LeaseHistory:
    """Outcomes of an asynchronous job's recent leases, for sizing its concurrency.

    ``report_seconds``: issue-to-upload time of each lease whose device uploaded (accepted or
    refused: it worked to the end). ``dropout_seconds``: how long each lease whose device never
    uploaded (silent, aborted, past its deadline) held its slot — until the coordinator counted
    it dead. ``working_seconds``: how long each lease still out has been working (right-censored:
    it will report, or not).
    """

    report_seconds: Sequence[float]
    dropout_seconds: Sequence[float]
    working_seconds: Sequence[float]

    @property
    def observations(self) -> int:
        """Leases in the history."""
        return len(self.report_seconds) + len(self.dropout_seconds) + len(self.working_seconds)


@dataclass(frozen=True)
class ConcurrencyPlan:
    """How many leases an asynchronous job keeps out, and the estimates behind the number."""

    leases: int
    dropout: float  # p̂: the chance a lease never reports (nan when not learned)
    hold_ratio: float  # ρ: a dropout's mean hold over a report's mean time (nan when not learned)
    learned: bool  # False: not enough history, the configured concurrency was used


def over_commit(useful: int, *, dropout: float, hold_ratio: float = 1.0, max_factor: float) -> int:
    """Leases to keep out so that ``useful`` of them are, on average, working towards a report.

    By Little's law a slot's share of time spent on leases that will report is
    ``(1 − p)·T / ((1 − p)·T + p·ρ·T)``, with ``T`` a report's mean time and ``ρ·T`` the mean
    time a doomed lease holds its slot before the coordinator counts it dead; so ``C`` useful
    slots take ``C·(1 + ρ·p / (1 − p))`` leases. With ``ρ = 1`` (a dead lease noticed as late
    as a report arrives) that is ``C / (1 − p)``. Never below ``useful`` nor above
    ``useful · max_factor``, rounded up; ``dropout`` 1 gives the cap.
    """
    if useful < 1:
        raise ValueError(f"useful must be >= 1, got {useful}")
    if not 0 <= dropout <= 1:
        raise ValueError(f"dropout must lie in [0, 1], got {dropout}")
    if hold_ratio < 0 or max_factor < 1:
        raise ValueError(
            f"need hold_ratio >= 0 and max_factor >= 1, got {hold_ratio}, {max_factor}"
        )
    ceiling = math.ceil(useful * max_factor - 1e-9)
    if dropout >= 1:
        return ceiling
    leases = useful * (1 + hold_ratio * dropout / (1 - dropout))
    return max(useful, min(ceiling, math.ceil(leases - 1e-9)))


def plan_concurrency(history: LeaseHistory, *, useful: int, max_factor: float) -> ConcurrencyPlan:
    """The leases an asynchronous job keeps out for ``useful`` working devices, learned.

    p̂ is the never-report share of the report-time model the synchronous planner fits
    (:func:`fit_report_times`: a Laplace-smoothed cure model, live leases right-censored), so
    both planners learn dropout alike; ρ is the dropouts' mean hold over the reports' mean
    time. Before :data:`MIN_OBSERVATIONS` leases (or two reports) the configured ``useful``
    is kept.
    """
    reports = history.report_seconds
    if history.observations < MIN_OBSERVATIONS or len(reports) < 2:
        return ConcurrencyPlan(useful, math.nan, math.nan, learned=False)
    model = fit_report_times(
        RoundHistory(
            report_seconds=reports,
            censored_seconds=history.working_seconds,
            aborted=len(history.dropout_seconds),
        )
    )
    mean_report = max(sum(reports) / len(reports), 1e-3)
    dead = history.dropout_seconds
    hold_ratio = (sum(dead) / len(dead)) / mean_report if dead else 1.0
    leases = over_commit(useful, dropout=model.never, hold_ratio=hold_ratio, max_factor=max_factor)
    return ConcurrencyPlan(leases, model.never, hold_ratio, learned=True)


def _smallest_cohort(
    model: ReportTimeModel,
    target: int,
    deadline: float,
    goal: float,
    ceiling: int,
    refill: float | None,
) -> CohortPlan:
    """The smallest cohort reaching ``target`` by ``deadline`` with probability ``goal``.

    ``refill``: seconds for a lost place to get a new device (None: places are never refilled).
    """
    q = model.reports_by(deadline)
    if refill is not None:  # a dead place is refilled, again, until the deadline
        k = 1
        while deadline - k * refill > 0 and model.never**k > 1e-9:
            q += model.never**k * model.reports_by(deadline - k * refill)
            k += 1
    n = target
    while n < ceiling and _at_least(target, n, q) < goal:
        n += 1
    return CohortPlan(n, deadline, _at_least(target, n, q), q, learned=True)


def _at_least(k: int, n: int, p: float) -> float:
    """P[Binomial(n, p) ≥ k], summed in log space so large n does not overflow."""
    if p <= 0:
        return 0.0 if k > 0 else 1.0
    if p >= 1:
        return 1.0 if n >= k else 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for i in range(k, n + 1):
        log_term = math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
        total += math.exp(log_term + i * log_p + (n - i) * log_q)
    return min(1.0, total)


def _inverse_mills(a: float) -> float:
    """φ(a) / (1 − Φ(a)), stable in the far tail (where it tends to a)."""
    tail = 0.5 * math.erfc(a / math.sqrt(2))
    if tail < 1e-300:
        return a
    return math.exp(-0.5 * a * a) / math.sqrt(2 * math.pi) / tail


def _normal_quantile(p: float) -> float:
    """Φ⁻¹(p) by bisection on erfc (exact enough for planning; no SciPy on the server)."""
    low, high = -10.0, 10.0
    for _ in range(100):
        middle = (low + high) / 2
        if 0.5 * math.erfc(-middle / math.sqrt(2)) < p:
            low = middle
        else:
            high = middle
    return (low + high) / 2
