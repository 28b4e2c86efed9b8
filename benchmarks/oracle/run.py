"""``make oracle``: Fedge's synchronous FedAvg against TensorFlow Federated, round by round.

1. builds ``.venv-tff`` (TFF 0.87 on TF 2.14) with ``setup_tff.sh`` unless it is there;
2. runs ``benchmarks.oracle.fedge_fedavg`` in this interpreter (``.venv``): the real
   coordinator and devices;
3. runs ``benchmarks.oracle.tff_fedavg`` in ``.venv-tff`` on the same clients, weights and
   settings, in a session of its own, then stops every ``worker_binary`` left in that session
   (TFF's C++ runtime leaves one behind) and checks that none survives;
4. prints, per round, ‖w_fedge − w_tff‖ / ‖w_tff‖, the same difference relative to the round's
   total movement ‖w_tff − w_0‖, and max |w_fedge − w_tff|; then PASS or FAIL.

PASS needs the relative difference ≤ ``--tolerance`` (1e-5) in every round, and the model to
have moved well beyond that (else the agreement would prove nothing). Why 1e-5: both sides
compute the same float32 arithmetic in different kernels (LiteRT/XNNPACK on the device, TF's
Eigen/oneDNN in TFF; Fedge averages in float64, TFF in float32), so they may differ by
round-off: a few float32 ulps (eps = 1.2e-7) per step, over R × E sequential steps. 1e-5 is
~100 eps, well above that, and far below any real difference in the algorithm (a wrong
weighting, step or learning rate moves the weights by a sizeable share of a round's update).

Run: ``make oracle`` or ``.venv/bin/python -m benchmarks.oracle.run [--rounds 5 --clients 10]``.
Exit status 0 on PASS, 1 on FAIL, 2 if a step could not run. Writes ``build/oracle/report.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks.harness import ROOT
from benchmarks.oracle.exchange import FEDGE_FILE, TFF_FILE, load_trajectory

HERE = Path(__file__).resolve().parent
WORKER = "worker_binary"
# The run must move the model by at least this many tolerances for a PASS to mean something.
MIN_MOVEMENT_IN_TOLERANCES = 100.0


@dataclass(frozen=True)
class RoundDifference:
    """How far apart the two global models are after one round."""

    round: int
    relative: float  # ‖w_fedge − w_tff‖ / ‖w_tff‖
    relative_to_update: float  # ‖w_fedge − w_tff‖ / ‖w_tff − w_0‖
    max_abs: float
    movement: float  # ‖w_tff − w_0‖ / ‖w_0‖


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "oracle")
    parser.add_argument("--tff-venv", type=Path, default=ROOT / ".venv-tff")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="relative, per round")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-epochs", type=int, default=5)
    parser.add_argument("--learning-rate", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tff-weighting",
        choices=["num_examples", "uniform"],
        default="num_examples",
        help="TFF's client weighting; 'uniform' is a negative control that must FAIL",
    )
    return parser.parse_args(argv)


def ensure_tff_venv(venv: Path) -> Path:
    """Build the TFF virtualenv with ``setup_tff.sh`` if needed; return its python."""
    subprocess.run(
        ["bash", str(HERE / "setup_tff.sh")], check=True, env={**os.environ, "TFF_VENV": str(venv)}
    )
    return venv / "bin" / "python"


def run_fedge(args: argparse.Namespace) -> None:
    """The Fedge side, in this interpreter's environment."""
    subprocess.run(
        [
            sys.executable,
            *("-m", "benchmarks.oracle.fedge_fedavg"),
            f"--work={args.work}",
            f"--plans={ROOT / 'build' / 'plans'}",
            f"--clients={args.clients}",
            f"--rounds={args.rounds}",
            f"--local-epochs={args.local_epochs}",
            f"--learning-rate={args.learning_rate}",
            f"--seed={args.seed}",
        ],
        check=True,
        cwd=ROOT,
    )


def run_tff(python: Path, args: argparse.Namespace) -> int:
    """The TFF side in its own session; return how many stray workers had to be stopped."""
    command = [
        str(python),
        *("-m", "benchmarks.oracle.tff_fedavg"),
        f"--work={args.work}",
        f"--weighting={args.tff_weighting}",
    ]
    # A session of its own: TFF's worker_binary inherits its id, which is how we find the
    # workers this run started (and no one else's) after they have been re-parented.
    child = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
    try:
        status = child.wait()
    finally:
        if child.poll() is None:  # interrupted: stop the TFF side and its workers
            os.killpg(child.pid, signal.SIGTERM)
            child.wait()
        stray = stop_workers(session=child.pid)
        left = workers_in_session(child.pid)
        if left:
            raise RuntimeError(f"{WORKER} processes {left} survived SIGKILL")
    if status != 0:
        raise subprocess.CalledProcessError(status, command)
    return stray


def workers_in_session(session: int) -> list[int]:
    """Live ``worker_binary`` processes whose session id is ``session`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = (entry / "comm").read_text().strip()
            stat = (entry / "stat").read_text()
        except OSError:  # it ended while we looked
            continue
        # /proc/PID/stat: "pid (comm) state ppid pgrp session ..."; comm may hold spaces.
        state, _ppid, _pgrp, sid = stat.rsplit(")", 1)[1].split()[:4]
        if name == WORKER and int(sid) == session and state != "Z":
            found.append(int(entry.name))
    return found


def stop_workers(*, session: int, timeout: float = 10.0) -> int:
    """SIGINT (as TFF itself does), then SIGKILL, the session's workers; return how many."""
    pids = workers_in_session(session)
    for sig in (signal.SIGINT, signal.SIGKILL):
        for pid in workers_in_session(session):
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while workers_in_session(session) and time.monotonic() < deadline:
            time.sleep(0.05)
    return len(pids)


def compare(fedge: np.ndarray, tff: np.ndarray) -> list[RoundDifference]:
    """Per-round differences between two trajectories that start from the same weights."""
    if fedge.shape != tff.shape:
        raise ValueError(f"trajectories differ in shape: fedge {fedge.shape}, tff {tff.shape}")
    if not np.array_equal(fedge[0], tff[0]):
        raise ValueError("the two sides did not start from the same weights")
    fedge64, tff64 = fedge.astype(np.float64), tff.astype(np.float64)
    start_norm = float(np.linalg.norm(tff64[0]))
    rounds = []
    for number in range(1, len(tff64)):
        gap = fedge64[number] - tff64[number]
        moved = float(np.linalg.norm(tff64[number] - tff64[0]))
        rounds.append(
            RoundDifference(
                round=number,
                relative=float(np.linalg.norm(gap) / np.linalg.norm(tff64[number])),
                relative_to_update=float(np.linalg.norm(gap) / moved),
                max_abs=float(np.abs(gap).max()),
                movement=moved / start_norm,
            )
        )
    return rounds


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so TFF's workers are still stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    for stale in (FEDGE_FILE, TFF_FILE):
        (args.work / stale).unlink(missing_ok=True)
    try:
        python = ensure_tff_venv(args.tff_venv.resolve())
        run_fedge(args)
        stray = run_tff(python, args)
    except subprocess.CalledProcessError as failed:  # the step has printed its own error
        print(f"FAIL: {failed.cmd[2]} exited with status {failed.returncode}")
        return 2
    except KeyboardInterrupt:  # run_tff has stopped the TFF side and its workers
        print("interrupted")
        return 130
    rounds = compare(load_trajectory(args.work / FEDGE_FILE), load_trajectory(args.work / TFF_FILE))

    print()
    print(f"FedAvg, Fedge against TFF: {args.clients} clients, {args.rounds} rounds, ", end="")
    print(f"{args.local_epochs} local full-batch SGD steps at lr {args.learning_rate}")
    print("round  ‖Δw‖/‖w_tff‖  ‖Δw‖/‖w_tff−w0‖  max|Δw|    ‖w_tff−w0‖/‖w0‖")
    for r in rounds:
        print(
            f"{r.round:>5}  {r.relative:>12.2e}  {r.relative_to_update:>15.2e}  "
            f"{r.max_abs:>9.2e}  {r.movement:>15.4f}"
        )
    worst = max(r.relative for r in rounds)
    moved = rounds[-1].movement
    within = worst <= args.tolerance
    meaningful = moved >= MIN_MOVEMENT_IN_TOLERANCES * args.tolerance
    passed = within and meaningful
    print(f"{WORKER}: {stray} left behind by the TFF side, stopped here; none running now")
    report = {
        "passed": passed,
        "tolerance": args.tolerance,
        "worst_relative": worst,
        "tff_weighting": args.tff_weighting,
        "workers_stopped": stray,
        "rounds": [asdict(r) for r in rounds],
    }
    (args.work / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if not meaningful:
        print(f"FAIL: the model moved only {moved:.1e} of its norm; the check proves nothing")
    elif within:
        print(f"PASS: worst relative difference {worst:.2e} <= tolerance {args.tolerance:.0e}")
    else:
        print(f"FAIL: worst relative difference {worst:.2e} > tolerance {args.tolerance:.0e}")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
