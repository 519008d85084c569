"""Layer normalization (Ba et al. 2016) spelled out for integer inference."""

import keras
from keras import ops

INVERSE_STDDEV_SCOPE = "inverse_stddev"


@keras.saving.register_keras_serializable(package="keras_zoo")
class LayerNormalization(keras.layers.LayerNormalization):
    """LayerNorm, (x - mean) / sqrt(var + eps) * gamma + beta, over the last axis.

    Same weights (``gamma``, ``beta``), config and numbers as
    ``keras.layers.LayerNormalization``, so checkpoints load either way; only
    the lowering differs. Keras computes ``x * inv + (beta - mean * inv)``
    (a NEG and a SQUARED_DIFFERENCE in TFLite, neither with an int8 XNNPACK
    kernel). Written as mean -> subtract -> multiply -> mean -> rsqrt ->
    multiply, every op but RSQRT has an int8 kernel, and RSQRT acts on one
    number per token, cheap to keep in float. Computes in float32 under
    mixed precision, like Keras.
    """

    def call(self, inputs):
        if self.rms_scaling or list(self.axis) not in ([-1], [len(inputs.shape) - 1]):
            return super().call(inputs)
        x = ops.cast(inputs, "float32")
        centered = x - ops.mean(x, axis=-1, keepdims=True)
        # A named scope lets the exporter keep exactly these few ops in float
        # (see export.tflite.INT8_FLOAT_SCOPES): the variance of an int8
        # tensor and the tiny epsilon quantize badly, and they cost nothing.
        with keras.name_scope(INVERSE_STDDEV_SCOPE):
            variance = ops.mean(centered * centered, axis=-1, keepdims=True)
            inverse_stddev = ops.rsqrt(variance + self.epsilon)
        outputs = centered * inverse_stddev
        if self.scale:
            outputs = outputs * ops.cast(self.gamma, "float32")
        if self.center:
            outputs = outputs + ops.cast(self.beta, "float32")
        return ops.cast(outputs, self.compute_dtype)


@keras.saving.register_keras_serializable(package="keras_zoo")
class BatchNormalization(keras.layers.BatchNormalization):
    """BatchNorm whose training step runs TensorFlow's fused kernel.

    Same weights, config and numbers as ``keras.layers.BatchNormalization``
    (moving statistics included); inference is Keras' own code. In training,
    Keras 3 computes the batch moments and the normalisation as separate
    ops, and their gradients as a dozen more (means, tiles, squared
    differences, sums), each one a pass over a full activation map; on a
    ResNet-50 step they take about a third of the CPU time. TF's
    ``FusedBatchNormV3`` (what Keras 2 used by default) does the forward in
    one kernel and the backward in another, on CPU, GPU and TPU (XLA lowers
    it). Used where it applies: 4-D channels-last inputs, no mask, no
    renorm, no cross-replica sync over several replicas (``synchronized``
    with one replica is the plain statistics), TensorFlow backend; anything
    else goes through Keras.
    """

    def _fusable(self, inputs, mask):
        if keras.backend.backend() != "tensorflow":
            return False
        import tensorflow as tf

        synced = self.synchronized and tf.distribute.get_strategy().num_replicas_in_sync > 1
        return (mask is None and not self.renorm and not synced and len(inputs.shape) == 4
                and list(self._reduction_axes) == [0, 1, 2])

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable and self._fusable(inputs, mask)):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = tf.cast(inputs, "float32")
        channels = x.shape[-1]
        scale = tf.cast(self.gamma, "float32") if self.scale else tf.ones((channels,))
        offset = tf.cast(self.beta, "float32") if self.center else tf.zeros((channels,))
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, scale, offset, epsilon=self.epsilon, data_format="NHWC", is_training=True)
        # The fused kernel reports the unbiased (n - 1) variance for the moving
        # average; Keras 3 averages the biased one, which it normalises with.
        shape = tf.shape(x)
        count = tf.cast(shape[0] * shape[1] * shape[2], "float32")
        variance = tf.where(count > 1.0, variance * (count - 1.0) / count, 0.0)
        moving_mean = tf.cast(self.moving_mean, "float32")
        moving_variance = tf.cast(self.moving_variance, "float32")
        self.moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(outputs, self.compute_dtype)


@keras.saving.register_keras_serializable(package="keras_zoo")
class RMSNormalization(keras.layers.RMSNormalization):
    """RMSNorm (Zhang & Sennrich 2019), x / sqrt(mean(x^2) + eps) * scale, last axis.

    Mamba's norm (eps 1e-5 there). Same weight (``scale``) and config as
    ``keras.layers.RMSNormalization``; computed in float32 under mixed
    precision (as the reference RMSNorm does) and spelled as
    mean -> add -> rsqrt -> multiply, which lowers to TFLite builtins.
    """

    def __init__(self, axis=-1, epsilon=1e-5, **kwargs):
        super().__init__(axis=axis, epsilon=epsilon, **kwargs)

    def call(self, x):
        if list(self.axis) not in ([-1], [len(x.shape) - 1]):
            return super().call(x)
        x32 = ops.cast(x, "float32")
        with keras.name_scope(INVERSE_STDDEV_SCOPE):
            inverse_rms = ops.rsqrt(ops.mean(x32 * x32, axis=-1, keepdims=True) + self.epsilon)
        outputs = x32 * inverse_rms * ops.cast(self.scale, "float32")
        return ops.cast(outputs, self.compute_dtype)
