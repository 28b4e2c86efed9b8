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


class Embedding(Layer):
    """Token ids (carried as float32, ``[batch, length]``) to vectors ``[batch, length, dim]``.

    A one-hot row times the table: ONE_HOT and one matmul each way, which XNNPACK runs (the
    converter makes the frozen inference model's product an EMBEDDING_LOOKUP). ``tf.gather``'s
    gradient converts builtins-only too (measured), but as a scatter-add that runs as a
    reference kernel; the one-hot product gives the same dense gradient. Uniform ±0.05
    initialisation, as Keras's ``Embedding``.
    """

    def __init__(
        self, name: str, vocabulary: int, dim: int, length: int, *, rng: np.random.Generator
    ) -> None:
        super().__init__(name)
        self.table = self._add("table", rng.uniform(-0.05, 0.05, (vocabulary, dim)))
        self.vocabulary, self.dim, self.length = vocabulary, dim, length

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """Look up every id of every sequence."""
        ids = tf.reshape(tf.cast(x, tf.int32), [-1])
        vectors = tf.matmul(tf.one_hot(ids, self.vocabulary), self.table)
        return tf.reshape(vectors, [-1, self.length, self.dim])


class LSTM(Layer):
    """One LSTM layer unrolled over a fixed length; returns the last hidden state.

    Hochreiter & Schmidhuber 1997 with a forget gate (Gers et al. 2000), gates ordered i, f, g,
    o as in Keras; Glorot-uniform input kernel, orthogonal recurrent kernel, forget-gate bias 1
    (Jozefowicz et al. 2015). Unrolled in builtins by :func:`ops.lstm`, which writes
    backpropagation through time by hand: a ``tf.while_loop``'s gradient keeps its activations
    in TensorLists, which the converter cannot lower with a dynamic batch (measured: "Lowering
    tensor list ops is failed"), and TFLite's fused LSTM kernels have no gradient. The input
    projection of all steps is one matmul outside the recurrence.
    """

    def __init__(
        self, name: str, units_in: int, units: int, length: int, *, rng: np.random.Generator
    ) -> None:
        super().__init__(name)
        limit = math.sqrt(6.0 / (units_in + 4 * units))
        self.kernel = self._add("kernel", rng.uniform(-limit, limit, (units_in, 4 * units)))
        q, r = np.linalg.qr(rng.normal(0.0, 1.0, (4 * units, units)))
        recurrent = (q * np.sign(np.diag(r))).T  # orthonormal rows, sign-fixed (Saxe et al.)
        self.recurrent = self._add("recurrent_kernel", recurrent)
        bias = np.zeros(4 * units)
        bias[units : 2 * units] = 1.0
        self.bias = self._add("bias", bias)
        self.units_in, self.units, self.length = units_in, units, length

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """Run the sequence ``[batch, length, units_in]`` and return the final hidden state."""
        projected = tf.matmul(tf.reshape(x, [-1, self.units_in]), self.kernel) + self.bias
        steps = tf.reshape(projected, [-1, self.length, 4 * self.units])
        return ops.lstm(steps, self.recurrent)
