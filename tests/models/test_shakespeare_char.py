"""The character model: its LSTM computes TensorFlow's, its plan is builtins only, it learns."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="the reference needs the 'models' extra")

from device_sdk import PlanRunner  # noqa: E402
from models import ops  # noqa: E402
from models.zoo import SHAKESPEARE_LENGTH, SHAKESPEARE_VOCABULARY, ZOO  # noqa: E402
from simulator import datasets  # noqa: E402

pytestmark = pytest.mark.tf


def autodiff_lstm(projected, recurrent):
    """The textbook LSTM (gates i, f, g, o; zero initial state) left to TensorFlow's autodiff."""
    units = recurrent.shape[0]
    h = tf.zeros([projected.shape[0], units])
    c = tf.zeros([projected.shape[0], units])
    for t in range(projected.shape[1]):
        z = projected[:, t, :] + tf.matmul(h, recurrent)
        i, f, g, o = tf.split(z, 4, axis=1)
        c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        h = tf.sigmoid(o) * tf.tanh(c)
    return h


def value_and_grads(fn, projected, recurrent):
    variables = [tf.Variable(projected), tf.Variable(recurrent)]
    with tf.GradientTape() as tape:
        h = fn(*variables)
        # A non-uniform upstream gradient, so every unit's path is weighted differently.
        loss = tf.reduce_sum(
            h * tf.sin(tf.reshape(tf.range(tf.size(h), dtype=tf.float32), h.shape))
        )
    return h.numpy(), [g.numpy() for g in tape.gradient(loss, variables)]


def test_the_hand_written_backpropagation_through_time_equals_tensorflows_autodiff():
    rng = np.random.default_rng(0)
    projected = rng.normal(0, 1, (3, 7, 4 * 5)).astype(np.float32)
    recurrent = rng.normal(0, 0.5, (5, 4 * 5)).astype(np.float32)

    ours = value_and_grads(ops.lstm, projected, recurrent)
    reference = value_and_grads(autodiff_lstm, projected, recurrent)

    np.testing.assert_allclose(ours[0], reference[0], rtol=1e-5, atol=1e-6)
    for mine, theirs in zip(ours[1], reference[1], strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)


def operators(plan: bytes) -> set[str]:
    """The names of every operator code a flatbuffer uses, over all its subgraphs."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(plan, 0)
    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if name.isupper()}
    found = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        found.add(code.CustomCode().decode() if code.CustomCode() else names[builtin])
    return found


def test_the_plan_is_made_of_builtin_ops_only(plans_dir):
    found = operators((plans_dir / "shakespeare_char.tflite").read_bytes())

    assert {"LOGISTIC", "TANH", "SPLIT", "UNPACK", "PACK", "ONE_HOT"} <= found
    assert "CUSTOM" not in found
    assert not [name for name in found if name.startswith("Flex")]


def test_the_model_reads_the_simulators_characters():
    assert (SHAKESPEARE_LENGTH, SHAKESPEARE_VOCABULARY) == (
        datasets.SHAKESPEARE_LENGTH,
        datasets.SHAKESPEARE_VOCABULARY,
    )
    assert ZOO["shakespeare_char"].num_classes == datasets.SHAKESPEARE_VOCABULARY


def test_a_few_litert_steps_on_one_roles_lines_lower_its_loss(plans_dir):
    role = next(r for r in datasets.shakespeare_roles() if r.name == "HAMLET")
    local = datasets.next_character_windows(role.text[:20_000], stride=7)
    runner = PlanRunner.from_files(plans_dir / "shakespeare_char.tflite")
    rng = np.random.default_rng(1)
    probe = rng.choice(len(local), 256, replace=False)
    before, _ = runner.evaluate_batch(local.x[probe], local.y[probe])

    for _ in range(30):
        batch = rng.choice(len(local), 32, replace=False)
        runner.train_step(local.x[batch], local.y[batch])
    after, _ = runner.evaluate_batch(local.x[probe], local.y[probe])

    assert before == pytest.approx(np.log(SHAKESPEARE_VOCABULARY), abs=0.2)  # uniform at start
    assert after < before - 0.5
