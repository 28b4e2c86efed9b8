"""Differentiable primitives whose forward and backward graphs convert to TFLite builtins only.

TensorFlow's own gradients for ``relu``, ``conv2d`` and ``max_pool`` are Flex ops (ReluGrad,
Conv2DBackpropFilter, MaxPoolGrad) that no device runtime carries; each primitive here is
written so that the gradient TensorFlow derives, or the one given explicitly, is made of
builtins. See ``shared/notes/tflite-on-device-training.md`` for the table of traps.
"""

from __future__ import annotations

import tensorflow as tf


def relu(x: tf.Tensor) -> tf.Tensor:
    """ReLU as ``maximum(x, 0)``: its gradient is a select, not the Flex op ReluGrad."""
    return tf.maximum(x, 0.0)


def conv3x3_same(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """3×3 convolution, stride 1, SAME padding, NHWC, as im2col + one matmul.

    Nine shifted slices of the zero-padded input are stacked along a new axis and multiplied by
    the kernel reshaped to ``[9 * C_in, C_out]``; slices, pads, stacks and matmuls differentiate
    into builtins.
    """
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    c_out = kernel.shape[3]
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    patches = tf.stack(
        [
            tf.slice(padded, [0, dy, dx, 0], [-1, height, width, channels])
            for dy in range(3)
            for dx in range(3)
        ],
        axis=3,
    )  # [N, H, W, 9, C_in], the order of kernel's first two axes
    columns = tf.reshape(patches, [-1, 9 * channels])
    out = tf.matmul(columns, tf.reshape(kernel, [9 * channels, c_out]))
    return tf.reshape(out, [-1, height, width, c_out])


def max_pool2x2(x: tf.Tensor) -> tf.Tensor:
    """2×2 max-pooling, stride 2, as reshape + ``reduce_max`` (MaxPoolGrad is a Flex op)."""
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    blocks = tf.reshape(x, [-1, height // 2, 2, width // 2, 2, channels])
    return tf.reduce_max(blocks, axis=[2, 4])


def softmax_cross_entropy(labels: tf.Tensor, logits: tf.Tensor, num_classes: int) -> tf.Tensor:
    """Per-example softmax cross-entropy from integer labels.

    ``tf.nn.softmax_cross_entropy_with_logits`` lowers to builtins even with a dynamic batch; a
    hand-written ``-sum(y * log_softmax)`` needs the Flex op BroadcastGradientArgs.
    """
    return tf.nn.softmax_cross_entropy_with_logits(
        labels=tf.one_hot(labels, num_classes), logits=logits
    )
