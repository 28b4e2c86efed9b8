"""The training-plan module: a zoo model plus optimizer state and the plan's signatures.

Every signature is a ``tf.function`` with a fixed input signature so that one ``.tflite`` file
carries them all (names and outputs in :data:`fedge.manifest.SIGNATURES`):

- ``train(x, y) -> loss``: one SGD-with-momentum step on a batch, plus FedProx's proximal
  gradient ``mu * (w - anchor)`` (Li et al., MLSys 2020). The batch axis is dynamic.
- ``infer(x) -> probabilities`` and ``evaluate(x, y) -> loss, correct``.
- ``get_weights() / set_weights(weights)``: all trainable weights as one flat float32 vector;
  ``set_weights`` also zeroes the momentum buffers (a new base model starts a new trajectory).
- ``set_hparams(learning_rate, momentum, mu)`` and ``set_anchor(anchor)``: configure a task
  without re-exporting the plan.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from fedge.manifest import WeightSlice
from models import ops
from models.zoo import ModelSpec


class TrainingPlan(tf.Module):
    """Trainable weights, momentum slots, FedProx anchor and hyper-parameters as variables."""

    def __init__(self, spec: ModelSpec, *, seed: int = 0) -> None:
        super().__init__(name=spec.name)
        self.spec = spec
        self.layers = spec.build(np.random.default_rng(seed))
        self.named_params: list[tuple[str, tf.Variable]] = [
            named for layer in self.layers for named in layer.weights
        ]
        self.params = [variable for _, variable in self.named_params]
        self.slots = [tf.Variable(tf.zeros_like(p), name="momentum") for p in self.params]
        self.anchors = [tf.Variable(tf.zeros_like(p), name="anchor") for p in self.params]
        self.learning_rate = tf.Variable(spec.hparams.learning_rate, name="learning_rate")
        self.momentum = tf.Variable(spec.hparams.momentum, name="momentum_coefficient")
        self.mu = tf.Variable(spec.hparams.mu, name="mu")
        self.layout = _layout(self.named_params)
        self.num_params = sum(piece.size for piece in self.layout)

        x_spec = tf.TensorSpec([None, *spec.input_shape], tf.float32, name="x")
        y_spec = tf.TensorSpec([None], tf.int32, name="y")
        w_spec = tf.TensorSpec([self.num_params], tf.float32, name="weights")
        scalar = tf.TensorSpec([], tf.float32)
        self.train = tf.function(self._train, input_signature=[x_spec, y_spec])
        self.infer = tf.function(self._infer, input_signature=[x_spec])
        self.evaluate = tf.function(self._evaluate, input_signature=[x_spec, y_spec])
        self.get_weights = tf.function(self._get_weights, input_signature=[])
        self.set_weights = tf.function(self._set_weights, input_signature=[w_spec])
        self.set_hparams = tf.function(self._set_hparams, input_signature=[scalar] * 3)
        self.set_anchor = tf.function(
            self._set_anchor, input_signature=[tf.TensorSpec([self.num_params], tf.float32)]
        )

    def signatures(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
        """Concrete functions keyed by signature name, for saving and converting."""
        return {
            "train": self.train.get_concrete_function(),
            "infer": self.infer.get_concrete_function(),
            "evaluate": self.evaluate.get_concrete_function(),
            "get_weights": self.get_weights.get_concrete_function(),
            "set_weights": self.set_weights.get_concrete_function(),
            "set_hparams": self.set_hparams.get_concrete_function(),
            "set_anchor": self.set_anchor.get_concrete_function(),
        }

    def logits(self, x: tf.Tensor) -> tf.Tensor:
        """The forward pass of the model's layers."""
        for layer in self.layers:
            x = layer(x)
        return x

    def _train(self, x: tf.Tensor, y: tf.Tensor) -> dict[str, tf.Tensor]:
        with tf.GradientTape() as tape:
            per_example = ops.softmax_cross_entropy(y, self.logits(x), self.spec.num_classes)
            loss = tf.reduce_mean(per_example)
        grads = tape.gradient(loss, self.params)
        for param, grad, slot, anchor in zip(
            self.params, grads, self.slots, self.anchors, strict=True
        ):
            # Heavy-ball momentum: v <- m*v + g; w <- w - lr*v. The proximal term's gradient
            # is added by hand; it needs no tape.
            step = grad + self.mu * (param - anchor)
            slot.assign(self.momentum * slot + step)
            param.assign_sub(self.learning_rate * slot)
        return {"loss": loss}

    def _infer(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"probabilities": tf.nn.softmax(self.logits(x))}

    def _evaluate(self, x: tf.Tensor, y: tf.Tensor) -> dict[str, tf.Tensor]:
        logits = self.logits(x)
        loss = tf.reduce_mean(ops.softmax_cross_entropy(y, logits, self.spec.num_classes))
        predicted = tf.cast(tf.argmax(logits, axis=1), tf.int32)
        correct = tf.reduce_sum(tf.cast(tf.equal(predicted, y), tf.int32))
        return {"loss": loss, "correct": correct}

    def _get_weights(self) -> dict[str, tf.Tensor]:
        return {"weights": tf.concat([tf.reshape(p, [-1]) for p in self.params], axis=0)}

    def _set_weights(self, weights: tf.Tensor) -> dict[str, tf.Tensor]:
        _scatter(weights, self.params, self.layout)
        for slot in self.slots:
            slot.assign(tf.zeros_like(slot))
        return {"num_params": tf.constant(self.num_params)}

    def _set_anchor(self, anchor: tf.Tensor) -> dict[str, tf.Tensor]:
        _scatter(anchor, self.anchors, self.layout)
        return {"num_params": tf.constant(self.num_params)}

    def _set_hparams(
        self, learning_rate: tf.Tensor, momentum: tf.Tensor, mu: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        self.learning_rate.assign(learning_rate)
        self.momentum.assign(momentum)
        self.mu.assign(mu)
        return {"num_params": tf.constant(self.num_params)}


def _layout(named: list[tuple[str, tf.Variable]]) -> tuple[WeightSlice, ...]:
    pieces, offset = [], 0
    for name, variable in named:
        shape = tuple(int(d) for d in variable.shape)
        size = int(np.prod(shape, dtype=np.int64))
        pieces.append(WeightSlice(name=name, shape=shape, offset=offset, size=size))
        offset += size
    return tuple(pieces)


def _scatter(flat: tf.Tensor, targets: list[tf.Variable], layout: tuple[WeightSlice, ...]) -> None:
    for variable, piece in zip(targets, layout, strict=True):
        variable.assign(tf.reshape(tf.slice(flat, [piece.offset], [piece.size]), piece.shape))
