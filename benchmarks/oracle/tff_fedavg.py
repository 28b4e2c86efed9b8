"""The oracle's TFF side: ``build_weighted_fed_avg`` on the problem the Fedge side wrote.

Runs in ``.venv-tff`` (TensorFlow Federated 0.87, TensorFlow 2.14; see ``setup_tff.sh``). The
model is the plan's multinomial logistic regression as a Keras ``Dense`` layer producing logits
with ``SparseCategoricalCrossentropy(from_logits=True)`` and mean reduction: the same loss as
the plan's ``train`` signature (``reduce_mean`` of softmax cross-entropy). Its weights are set
from the flat vector using the plan manifest's ``weights_layout``.

Client SGD without momentum at the problem's learning rate, server SGD at 1.0, clients weighted
by example count (``ClientWeighting.NUM_EXAMPLES`` counts examples seen, E × n_k, which is
proportional to n_k since every client runs the same E). Each client's dataset is one batch of
all its examples, repeated E times: E full-batch steps, as on the Fedge side. Every round
takes every client. Writes ``tff.npz``: the global weights after each round.

TFF's C++ runtime starts a ``worker_binary`` child that outlives this process; it is stopped
here on the way out (``run.py`` also sweeps this process's session for any left behind).

Run: ``.venv-tff/bin/python -m benchmarks.oracle.tff_fedavg --work build/oracle`` from the
repository root (it imports only ``benchmarks.oracle.exchange`` of the checkout).
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path
from typing import Any

# TF 2.14 logs spurious CUDA "errors" (cuDNN factory already registered) on CPU wheels.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import psutil
import tensorflow as tf
import tensorflow_federated as tff

from benchmarks.oracle.exchange import TFF_FILE, FloatArray, Problem, save_trajectory

WORKER = "worker_binary"


def keras_model(problem: Problem) -> tf.keras.Model:
    """``Dense(num_classes)`` on the plan's input shape: logits, as the plan computes them."""
    manifest = problem.manifest
    input_shape = tuple(manifest["inputs"]["x"]["shape"][1:])
    return tf.keras.Sequential(
        [
            tf.keras.layers.InputLayer(input_shape=input_shape),
            tf.keras.layers.Dense(manifest["num_classes"], name="linear"),
        ]
    )


def unflatten(problem: Problem, flat: FloatArray) -> list[np.ndarray]:
    """The plan's flat vector as Keras' trainable weights, in the manifest's layout order.

    The plan's layout is ``linear/kernel`` (inputs × classes, row-major) then ``linear/bias``:
    Keras' ``Dense`` holds ``[kernel, bias]`` with the same shapes and meaning (``x @ W + b``).
    """
    return [
        flat[piece["offset"] : piece["offset"] + piece["size"]].reshape(piece["shape"])
        for piece in problem.manifest["weights_layout"]
    ]


def flatten(weights: list[Any]) -> FloatArray:
    """Keras-ordered trainable weights as one flat float32 vector."""
    return np.concatenate([np.asarray(w, dtype=np.float32).ravel() for w in weights])


def client_datasets(problem: Problem) -> list[tf.data.Dataset]:
    """Client k's examples as E full batches: E full-batch SGD steps in TFF's client loop."""
    datasets = []
    for k in range(problem.num_clients):
        x, y = problem.client(k)
        if len(y) > problem.batch_size:
            raise ValueError(f"client {k} has {len(y)} examples, more than one batch")
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(problem.batch_size)
        datasets.append(dataset.repeat(problem.local_epochs))
    return datasets


def run(problem: Problem, weighting: tff.learning.ClientWeighting) -> FloatArray:
    """Run ``problem.rounds`` rounds of TFF's weighted FedAvg; return the global weights."""
    datasets = client_datasets(problem)
    element_spec = datasets[0].element_spec
    expected_shapes = [tuple(piece["shape"]) for piece in problem.manifest["weights_layout"]]

    def model_fn() -> tff.learning.models.VariableModel:
        model = keras_model(problem)
        shapes = [tuple(w.shape) for w in model.trainable_weights]
        if shapes != expected_shapes:
            raise ValueError(f"Keras weights {shapes} do not match the plan's {expected_shapes}")
        return tff.learning.models.from_keras_model(
            model,
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            input_spec=element_spec,
        )

    process = tff.learning.algorithms.build_weighted_fed_avg(
        model_fn,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=problem.learning_rate),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(
            learning_rate=problem.server_learning_rate
        ),
        client_weighting=weighting,
    )
    state = process.initialize()
    start = tff.learning.models.ModelWeights(
        trainable=unflatten(problem, problem.initial_weights), non_trainable=[]
    )
    state = process.set_model_weights(state, start)
    trajectory = [flatten(process.get_model_weights(state).trainable)]
    for number in range(1, problem.rounds + 1):
        result = process.next(state, datasets)
        state = result.state
        trajectory.append(flatten(process.get_model_weights(state).trainable))
        train = result.metrics["client_work"]["train"]
        print(f"tff: round {number}: loss {train['loss']:.4f}, examples {train['num_examples']}")
    return np.stack(trajectory)


def stop_workers(timeout: float = 10.0) -> int:
    """Stop this process's ``worker_binary`` children; return how many there were.

    SIGINT first, as TFF's own ``ServiceManager.__del__`` does, then SIGKILL.
    """
    workers = [p for p in psutil.Process().children(recursive=True) if p.name() == WORKER]
    for worker in workers:
        worker.send_signal(signal.SIGINT)
    _, alive = psutil.wait_procs(workers, timeout=timeout)
    for worker in alive:
        worker.kill()
    psutil.wait_procs(alive, timeout=timeout)
    return len(workers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("build/oracle"))
    parser.add_argument(
        "--weighting",
        choices=["num_examples", "uniform"],
        default="num_examples",
        help="client weighting; 'uniform' is a negative control (Fedge weights by examples)",
    )
    args = parser.parse_args(argv)
    weighting = tff.learning.ClientWeighting[args.weighting.upper()]
    problem = Problem.load(args.work)
    print(f"tff: tensorflow-federated {tff.__version__}, tensorflow {tf.__version__}")
    started = time.perf_counter()
    try:
        trajectory = run(problem, weighting)
    finally:
        stopped = stop_workers()
    seconds = time.perf_counter() - started
    save_trajectory(args.work / TFF_FILE, trajectory, seconds)
    print(f"tff: {problem.rounds} rounds in {seconds:.1f} s; stopped {stopped} {WORKER}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
