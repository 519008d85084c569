"""LayerNormalization (int8-friendly lowering) and BatchNormalization (fused training
kernel): Keras' numbers and weights either way."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_zoo.layers.normalization import BatchNormalization, LayerNormalization


def _pair(dim=16, epsilon=1e-6):
    rng = np.random.default_rng(0)
    ours, theirs = LayerNormalization(epsilon=epsilon), keras.layers.LayerNormalization(
        epsilon=epsilon)
    ours.build((None, 5, dim))
    theirs.build((None, 5, dim))
    weights = [rng.normal(1, 0.3, dim).astype("float32"), rng.normal(0, 0.3, dim).astype("float32")]
    theirs.set_weights(weights)
    ours.set_weights(theirs.get_weights())  # same variables, same order
    return ours, theirs


def test_matches_keras_layer_normalization():
    ours, theirs = _pair()
    x = np.random.default_rng(1).normal(3.0, 5.0, (2, 5, 16)).astype("float32")
    np.testing.assert_allclose(ours(x), theirs(x), atol=2e-5)
    out = keras.ops.convert_to_numpy(LayerNormalization()(x))
    np.testing.assert_allclose(out.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(-1), 1.0, atol=1e-3)
    assert [w.name for w in ours.weights] == [w.name for w in theirs.weights] == ["gamma", "beta"]


def test_config_round_trip_and_other_axes_fall_back_to_keras():
    layer = LayerNormalization(epsilon=1e-5, center=False)
    clone = LayerNormalization.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    x = np.random.default_rng(2).normal(size=(2, 3, 4)).astype("float32")
    ours, theirs = LayerNormalization(axis=1), keras.layers.LayerNormalization(axis=1)
    np.testing.assert_allclose(ours(x), theirs(x), atol=1e-5)


def _tflite_ops(layer):
    inputs = keras.Input((5, 16), batch_size=1)
    model = keras.Model(inputs, layer(inputs))
    fn = tf.function(lambda x: model(x)).get_concrete_function(
        tf.TensorSpec((1, 5, 16), tf.float32))
    content = tf.lite.TFLiteConverter.from_concrete_functions([fn], model).convert()
    from export.tflite import model_ops

    return set(model_ops(content)["builtin"])


def test_lowers_without_neg_or_squared_difference():
    ours, theirs = _pair()
    keras_ops, our_ops = _tflite_ops(theirs), _tflite_ops(ours)
    # Keras' lowering: ops without int8 XNNPACK kernels (issue 5's measurement).
    assert {"NEG", "SQUARED_DIFFERENCE"} & keras_ops
    assert not {"NEG", "SQUARED_DIFFERENCE"} & our_ops
    assert {"MEAN", "SUB", "MUL", "RSQRT"} <= our_ops


def _bn_pair(**kwargs):
    rng = np.random.default_rng(0)
    ours, theirs = BatchNormalization(**kwargs), keras.layers.BatchNormalization(**kwargs)
    for layer in (ours, theirs):
        layer.build((None, 6, 5, 8))
    theirs.set_weights([rng.normal(1, 0.3, 8) if "gamma" in w.name else
                        rng.uniform(0.5, 2, 8) if "variance" in w.name else rng.normal(0, 0.3, 8)
                        for w in theirs.weights])
    ours.set_weights(theirs.get_weights())
    return ours, theirs


@pytest.mark.parametrize("kwargs", [{"momentum": 0.9, "epsilon": 1e-5},
                                    {"center": False, "scale": False}])
@pytest.mark.parametrize("jit_compile", [False, True])
def test_batchnorm_training_matches_keras(kwargs, jit_compile):
    """Outputs, input/weight gradients and the moving statistics after two
    training steps agree with keras.layers.BatchNormalization."""
    ours, theirs = _bn_pair(**kwargs)
    x = tf.constant(np.random.default_rng(1).normal(2.0, 3.0, (4, 6, 5, 8)).astype("float32"))
    upstream = tf.constant(np.random.default_rng(2).normal(size=(4, 6, 5, 8)).astype("float32"))

    def step(layer):
        @tf.function(jit_compile=jit_compile)
        def run(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                loss = tf.reduce_sum(y * upstream)
            return y, tape.gradient(loss, [x] + layer.trainable_weights)
        return run

    run_ours, run_theirs = step(ours), step(theirs)
    for _ in range(2):
        (y_ours, g_ours), (y_theirs, g_theirs) = run_ours(x), run_theirs(x)
    np.testing.assert_allclose(y_ours, y_theirs, atol=2e-5)
    for a, b in zip(g_ours, g_theirs):
        np.testing.assert_allclose(a, b, atol=2e-4, rtol=1e-4)
    assert [w.name for w in ours.weights] == [w.name for w in theirs.weights]
    for a, b in zip(ours.non_trainable_weights, theirs.non_trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    x_eval = x[:1]  # inference is Keras' own code, on moving statistics equal to ~1 ulp
    np.testing.assert_allclose(ours(x_eval), theirs(x_eval), atol=1e-5)


def test_batchnorm_training_uses_the_fused_kernel():
    layer = BatchNormalization()
    layer.build((None, 4, 4, 3))
    graph = tf.function(lambda x: layer(x, training=True)).get_concrete_function(
        tf.TensorSpec((2, 4, 4, 3))).graph
    assert "FusedBatchNormV3" in {op.type for op in graph.get_operations()}


def test_batchnorm_other_layouts_fall_back_to_keras():
    """A 2-D input (or a mask, renorm, sync) takes Keras' path, with Keras' numbers."""
    ours, theirs = BatchNormalization(), keras.layers.BatchNormalization()
    x = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
    np.testing.assert_allclose(ours(x, training=True), theirs(x, training=True), atol=1e-6)
