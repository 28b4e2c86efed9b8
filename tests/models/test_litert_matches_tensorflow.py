"""The plan LiteRT runs computes what TensorFlow computes for the same module."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="the reference needs the 'models' extra")

from device_sdk import PlanRunner  # noqa: E402
from models.plan import TrainingPlan  # noqa: E402
from models.zoo import ZOO  # noqa: E402

pytestmark = pytest.mark.tf
TOLERANCE = 1e-5


def batches(name, count, rng):
    spec = ZOO[name]
    for _ in range(count):
        size = 32 if count > 1 else 7
        if spec.input_vocabulary is None:
            x = rng.random((size, *spec.input_shape), dtype=np.float32)
        else:  # token ids, carried as float32
            x = rng.integers(0, spec.input_vocabulary, (size, *spec.input_shape))
            x = x.astype(np.float32)
        y = rng.integers(0, spec.num_classes, size).astype(np.int32)
        yield x, y


@pytest.mark.parametrize("name", sorted(ZOO))
def test_litert_train_steps_equal_tensorflow_steps(plans_dir, name):
    # Compared in lockstep pairs: both sides restart from the same weights (momentum zeroed),
    # then take two steps, so the second step exercises momentum and FedProx. Longer runs drift
    # apart legitimately: a ReLU or max-pool tie decided by a 1e-7 rounding difference sends a
    # gradient elsewhere, and momentum amplifies it.
    rng = np.random.default_rng(7)
    reference = TrainingPlan(ZOO[name], seed=0)
    runner = PlanRunner.from_files(plans_dir / f"{name}.tflite")
    weights = reference.get_weights()["weights"].numpy()
    anchor = weights + rng.normal(0, 0.01, weights.shape).astype(np.float32)
    for model in (reference, runner):
        model.set_anchor(anchor)
    reference.set_hparams(np.float32(0.05), np.float32(0.9), np.float32(0.1))
    runner.set_hparams(learning_rate=0.05, momentum=0.9, mu=0.1)

    full, ragged = list(batches(name, 3, rng)), next(batches(name, 1, rng))
    for pair in ([full[0], full[1]], [full[2], ragged]):
        reference.set_weights(weights)
        runner.set_weights(weights)
        for x, y in pair:
            expected = float(reference.train(tf.constant(x), tf.constant(y))["loss"])
            np.testing.assert_allclose(runner.train_step(x, y), expected, rtol=TOLERANCE)
        weights = runner.get_weights()
        np.testing.assert_allclose(
            weights, reference.get_weights()["weights"].numpy(), rtol=TOLERANCE, atol=TOLERANCE
        )


@pytest.mark.parametrize("name", sorted(ZOO))
def test_litert_inference_and_evaluation_equal_tensorflow(plans_dir, name):
    rng = np.random.default_rng(3)
    reference = TrainingPlan(ZOO[name], seed=0)
    runner = PlanRunner.from_files(plans_dir / f"{name}.tflite")
    ((x, y),) = batches(name, 1, rng)

    expected = reference.evaluate(tf.constant(x), tf.constant(y))
    loss, correct = runner.evaluate_batch(x, y)

    np.testing.assert_allclose(loss, float(expected["loss"]), rtol=TOLERANCE)
    assert correct == int(expected["correct"])
    np.testing.assert_allclose(
        runner.infer(x), reference.infer(tf.constant(x))["probabilities"].numpy(), atol=TOLERANCE
    )
