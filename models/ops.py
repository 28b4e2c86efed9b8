"""Differentiable primitives whose forward and backward graphs convert to fast TFLite builtins.

TensorFlow's own gradients for ``relu``, ``conv2d`` and ``max_pool`` are Flex ops (ReluGrad,
Conv2DBackpropFilter, MaxPoolGrad) that no device runtime carries, so each primitive here gives
its gradient explicitly with ``tf.custom_gradient``, written in builtins that LiteRT's XNNPACK
delegate runs on all cores. What was measured to matter (``python -m benchmarks.device_step``;
the figures are in ``benchmarks/RESULTS.md``, "The CNN gap"):

- Every large matrix product must be a MATMUL: XNNPACK takes FULLY_CONNECTED and BATCH_MATMUL
  with weights computed at run time, but not CONV_2D, whose kernel is a variable here; LiteRT
  then falls back to a single-threaded Eigen GEMM, several times slower.
- BROADCAST_TO and SELECT_V2 run as slow reference kernels. ``reduce_max``'s automatic gradient
  is built from them and cost more than all the convolutions together; ``maximum(x, 0)``'s
  gradient is a SELECT_V2.

See ``shared/notes/tflite-on-device-training.md`` for the ops that need Flex.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

_Gradient = Callable[[tf.Tensor], tf.Tensor]


def relu(x: tf.Tensor) -> tf.Tensor:
    """ReLU as the builtin RELU; its gradient ``dy * (y > 0)`` is a MUL, not ReluGrad or SELECT.

    ``y > 0`` matches TensorFlow's ReluGrad, which passes no gradient at exactly zero.
    """
    return _relu(x)


def conv3x3_same(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """3×3 convolution, stride 1, SAME padding, NHWC, as im2col + one matmul each way.

    Forward: the nine shifted windows of the zero-padded input, concatenated along channels,
    times the kernel reshaped to ``[9 * C_in, C_out]``. Backward: the kernel's gradient is
    ``patches^T @ dy`` (the patches are kept from the forward pass) and the input's gradient is
    the patches of ``dy`` times the kernel rotated 180° with its channel axes swapped (a SAME
    convolution is its own transpose up to that flip). An input gradient nobody asks for, such
    as the first layer's, is pruned by the converter, so there is no flag for it.
    """
    height, width, c_in = x.shape[1], x.shape[2], x.shape[3]
    c_out = kernel.shape[3]

    @tf.custom_gradient
    def conv(x: tf.Tensor, kernel: tf.Tensor) -> tuple[tf.Tensor, _Gradient]:
        patches = _patches3x3(x)
        y = tf.matmul(patches, tf.reshape(kernel, [9 * c_in, c_out]))

        def grad(dy: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            dy_rows = tf.reshape(dy, [-1, c_out])
            d_kernel = tf.matmul(patches, dy_rows, transpose_a=True)
            # Rotating a 3×3 kernel by 180° reverses its 9 flattened taps (3·dy+dx ↔ 8−3·dy−dx):
            # one single-axis REVERSE_V2, which tflite-runtime 2.14 runs correctly; a two-axis
            # reverse silently gives wrong input gradients there.
            taps = tf.reverse(tf.reshape(kernel, [9, c_in, c_out]), [0])
            flipped = tf.transpose(taps, [0, 2, 1])  # [9, c_out, c_in]
            d_x = tf.matmul(_patches3x3(dy), tf.reshape(flipped, [9 * c_out, c_in]))
            return (
                tf.reshape(d_x, [-1, height, width, c_in]),
                tf.reshape(d_kernel, [3, 3, c_in, c_out]),
            )

        return tf.reshape(y, [-1, height, width, c_out]), grad

    return conv(x, tf.convert_to_tensor(kernel))


def max_pool2x2(x: tf.Tensor) -> tf.Tensor:
    """2×2 max-pooling, stride 2, as the builtin MAX_POOL_2D.

    The gradient goes to the positions equal to their window's maximum: ``(x == up(y)) * up(dy)``
    with a nearest-neighbour 2× upsampling made of reshapes and concatenations. Unlike
    TensorFlow's MaxPoolGrad, which picks the first maximum, a tie sends the gradient to every
    tied position; after :func:`relu` only ties at zero are common, and their gradient is zero.
    """
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]

    @tf.custom_gradient
    def pool(x: tf.Tensor) -> tuple[tf.Tensor, _Gradient]:
        y = tf.nn.max_pool2d(x, 2, 2, "VALID")

        def grad(dy: tf.Tensor) -> tf.Tensor:
            winners = tf.cast(tf.equal(x, _upsample2x(y, height, width, channels)), x.dtype)
            return winners * _upsample2x(dy, height, width, channels)

        return y, grad

    return pool(x)


def softmax_cross_entropy(labels: tf.Tensor, logits: tf.Tensor, num_classes: int) -> tf.Tensor:
    """Per-example softmax cross-entropy from integer labels.

    ``tf.nn.softmax_cross_entropy_with_logits`` lowers to builtins even with a dynamic batch; a
    hand-written ``-sum(y * log_softmax)`` needs the Flex op BroadcastGradientArgs.
    """
    return tf.nn.softmax_cross_entropy_with_logits(
        labels=tf.one_hot(labels, num_classes), logits=logits
    )


@tf.custom_gradient
def _relu(x: tf.Tensor) -> tuple[tf.Tensor, _Gradient]:
    y = tf.nn.relu(x)

    def grad(dy: tf.Tensor) -> tf.Tensor:
        return dy * tf.cast(y > 0.0, dy.dtype)

    return y, grad


def _patches3x3(x: tf.Tensor) -> tf.Tensor:
    """Im2col rows ``[N * H * W, 9 * C]``, ordered like a ``[3, 3, C, C_out]`` kernel's rows."""
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    windows = [
        tf.slice(padded, [0, dy, dx, 0], [-1, height, width, channels])
        for dy in range(3)
        for dx in range(3)
    ]
    # CONCATENATION, not PACK: same layout, slightly faster, and never differentiated here.
    return tf.reshape(tf.concat(windows, axis=3), [-1, 9 * channels])


def _upsample2x(t: tf.Tensor, height: int, width: int, channels: int) -> tf.Tensor:
    """Nearest-neighbour 2× upsampling ``[N, H/2, W/2, C] -> [N, H, W, C]``."""
    t = tf.reshape(t, [-1, height // 2, 1, width // 2, 1, channels])
    t = tf.concat([t, t], axis=4)
    t = tf.concat([t, t], axis=2)
    return tf.reshape(t, [-1, height, width, channels])


def lstm(projected: tf.Tensor, recurrent: tf.Tensor) -> tf.Tensor:
    """An LSTM over ``projected = x @ W + b`` (``[N, T, 4H]``, gates i, f, g, o); the last ``h``.

    The zero initial state is folded into step 0. Backpropagation through time is written out
    by hand: autodiff of the cell's products between two dynamic-batch tensors emits the Flex
    op BroadcastGradientArgs, and TensorFlow's gradients of sigmoid and tanh are the Flex ops
    SigmoidGrad and TanhGrad. Here the backward pass is MULs, SUBs, one CONCATENATION of the
    four gate gradients per step, a MATMUL per step for ``dh`` and a single MATMUL for the
    recurrent kernel's gradient over all steps.
    """
    length, units = projected.shape[1], recurrent.shape[0]

    @tf.custom_gradient
    def run(projected: tf.Tensor, recurrent: tf.Tensor) -> tuple[tf.Tensor, _Gradient]:
        saved = []  # per step: (h, c, i, f, g, o, tanh c), all [N, H]
        h = c = None
        for z in tf.unstack(projected, num=length, axis=1):
            if h is not None:
                z = z + tf.matmul(h, recurrent)
            zi, zf, zg, zo = tf.split(z, 4, axis=1)
            i, f, g, o = tf.sigmoid(zi), tf.sigmoid(zf), tf.tanh(zg), tf.sigmoid(zo)
            c = i * g if c is None else f * c + i * g
            tanh_c = tf.tanh(c)
            h = o * tanh_c
            saved.append((h, c, i, f, g, o, tanh_c))
        assert h is not None

        def grad(dh: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            dz_steps: list[tf.Tensor] = []
            dc = None
            for t in reversed(range(length)):
                _, _, i, f, g, o, tanh_c = saved[t]
                do = dh * tanh_c
                dc_here = dh * o * (1.0 - tanh_c * tanh_c)
                dc = dc_here if dc is None else dc + dc_here
                if t > 0:
                    c_before = saved[t - 1][1]
                    dzf = dc * c_before * f * (1.0 - f)
                else:
                    dzf = tf.zeros_like(dc)
                dzi = dc * g * i * (1.0 - i)
                dzg = dc * i * (1.0 - g * g)
                dzo = do * o * (1.0 - o)
                dz = tf.concat([dzi, dzf, dzg, dzo], axis=1)
                dz_steps.append(dz)
                if t > 0:
                    dh = tf.matmul(dz, recurrent, transpose_b=True)
                    dc = dc * f
            dz_steps.reverse()
            d_projected = tf.stack(dz_steps, axis=1)
            # dU = Σ_t h_{t-1}^T dz_t, as one product over every (example, step) row.
            h_before = tf.reshape(tf.stack([s[0] for s in saved[:-1]], axis=1), [-1, units])
            dz_after = tf.reshape(tf.stack(dz_steps[1:], axis=1), [-1, 4 * units])
            d_recurrent = tf.matmul(h_before, dz_after, transpose_a=True)
            return d_projected, d_recurrent

        return h, grad

    return run(projected, tf.convert_to_tensor(recurrent))
