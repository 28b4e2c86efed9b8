"""The builtins-only primitives compute TensorFlow's native values and gradients."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="needs the 'models' extra")

from models import ops  # noqa: E402

pytestmark = pytest.mark.tf


def value_and_grads(fn, *inputs):
    variables = [tf.Variable(v) for v in inputs]
    with tf.GradientTape() as tape:
        out = fn(*variables)
        # A non-uniform upstream gradient, so that every path is weighted differently.
        loss = tf.reduce_sum(
            out * tf.sin(tf.reshape(tf.range(tf.size(out), dtype=tf.float32), out.shape))
        )
    return out.numpy(), [g.numpy() for g in tape.gradient(loss, variables)]


def test_conv3x3_same_matches_native_conv2d_and_its_gradients():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 6, 5, 4)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 4, 7)).astype(np.float32)

    ours = value_and_grads(ops.conv3x3_same, x, kernel)
    native = value_and_grads(lambda a, k: tf.nn.conv2d(a, k, 1, "SAME"), x, kernel)

    np.testing.assert_allclose(ours[0], native[0], rtol=1e-5, atol=1e-5)
    for mine, theirs in zip(ours[1], native[1], strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-4)


def test_max_pool2x2_matches_native_max_pool_and_its_gradient():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 6, 4, 3)).astype(np.float32)  # no ties: continuous values

    ours = value_and_grads(ops.max_pool2x2, x)
    native = value_and_grads(lambda a: tf.nn.max_pool2d(a, 2, 2, "VALID"), x)

    np.testing.assert_allclose(ours[0], native[0])
    np.testing.assert_allclose(ours[1][0], native[1][0])


def test_relu_matches_native_relu_and_its_gradient():
    x = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0]], np.float32)

    ours = value_and_grads(ops.relu, x)
    native = value_and_grads(tf.nn.relu, x)

    np.testing.assert_array_equal(ours[0], native[0])
    np.testing.assert_array_equal(ours[1][0], native[1][0])
