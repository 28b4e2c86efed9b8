"""Trainable layers: variables plus a forward pass built from :mod:`models.ops` primitives."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from models import ops


class Layer(tf.Module):
    """A layer owns named variables in a fixed order; that order is the flat-vector layout."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name)
        self.weights: list[tuple[str, tf.Variable]] = []

    def _add(self, name: str, value: np.ndarray) -> tf.Variable:
        variable = tf.Variable(value.astype(np.float32), name=name)
        self.weights.append((f"{self.name}/{name}", variable))
        return variable

    def __call__(self, x: tf.Tensor) -> tf.Tensor:  # pragma: no cover - abstract
        """Apply the layer to a batch."""
        raise NotImplementedError


class Dense(Layer):
    """Fully connected layer, Glorot-uniform kernel, zero bias, optional ReLU."""

    def __init__(
        self, name: str, units_in: int, units_out: int, *, relu: bool, rng: np.random.Generator
    ) -> None:
        super().__init__(name)
        limit = math.sqrt(6.0 / (units_in + units_out))
        self.kernel = self._add("kernel", rng.uniform(-limit, limit, (units_in, units_out)))
        self.bias = self._add("bias", np.zeros(units_out))
        self.relu = relu

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """Apply ``x @ kernel + bias`` (then ReLU if asked)."""
        y = tf.matmul(x, self.kernel) + self.bias
        return ops.relu(y) if self.relu else y


class Conv3x3(Layer):
    """3×3 convolution, stride 1, SAME padding, He-normal kernel, zero bias, then ReLU."""

    def __init__(
        self, name: str, channels_in: int, channels_out: int, *, rng: np.random.Generator
    ) -> None:
        super().__init__(name)
        std = math.sqrt(2.0 / (9 * channels_in))
        self.kernel = self._add("kernel", rng.normal(0.0, std, (3, 3, channels_in, channels_out)))
        self.bias = self._add("bias", np.zeros(channels_out))

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """Convolve, add the bias, apply ReLU."""
        return ops.relu(ops.conv3x3_same(x, self.kernel) + self.bias)


class MaxPool2x2(Layer):
    """2×2 max-pooling with stride 2; no weights."""

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """Pool."""
        return ops.max_pool2x2(x)


class Flatten(Layer):
    """Flatten every axis but the batch axis; no weights."""

    def __init__(self, name: str, size: int) -> None:
        super().__init__(name)
        self.size = size

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """Reshape to ``[batch, size]``."""
        return tf.reshape(x, [-1, self.size])
