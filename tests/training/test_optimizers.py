"""keras_zoo.training.optimizers: the fused Adam(W) is Keras' Adam(W), faster."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_zoo.training import optimizers


def _model():
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu")(inputs)
    h = keras.layers.LayerNormalization()(h)
    return keras.Model(inputs, keras.layers.Dense(3)(h))


def _train(optimizer, jit_compile, steps=6):
    keras.utils.set_random_seed(1)
    model = _model()
    if getattr(optimizer, "weight_decay", None):
        optimizer.exclude_from_weight_decay(
            var_list=[v for v in model.trainable_variables if len(v.shape) <= 1])
    model.compile(optimizer=optimizer, loss="mse", jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 6)), rng.normal(size=(32, 3))
    model.fit(x, y, batch_size=8, epochs=steps // 4 + 1, verbose=0, shuffle=False)
    return model


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("name, kwargs", [
    ("AdamW", {"learning_rate": 3e-2, "weight_decay": 0.1, "global_clipnorm": 1.0}),
    ("Adam", {"learning_rate": 3e-2, "beta_2": 0.95, "epsilon": 1e-6}),
])
def test_fused_update_matches_keras(name, kwargs, jit_compile):
    ours = _train(getattr(optimizers, name)(**kwargs), jit_compile)
    theirs = _train(getattr(keras.optimizers, name)(**kwargs), jit_compile)
    start = _model()  # same seed: the weights before training
    moved = max(np.abs(a - b).max() for a, b in zip(theirs.get_weights(), start.get_weights()))
    assert moved > 0.05  # training moved the weights, so equality means something
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, atol=2e-6, rtol=1e-5)
    for a, b in zip(ours.optimizer.variables, theirs.optimizer.variables):
        # Same slots in the same order (layer-name counters differ between models).
        assert (a.name.rsplit("_", 1)[-1], a.shape) == (b.name.rsplit("_", 1)[-1], b.shape)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6, rtol=1e-5)


def test_fused_kernel_is_what_runs():
    """The graph of one update has ResourceApplyAdam and not Keras' per-op chain."""
    variable = keras.Variable(np.ones((4,), "float32"))
    optimizer = optimizers.AdamW(1e-2, weight_decay=0.0)
    optimizer.build([variable])
    step = tf.function(lambda g: optimizer.apply([g], [variable]))
    graph = step.get_concrete_function(tf.TensorSpec((4,))).graph
    ops = {op.type for op in graph.get_operations()}
    for fn in graph._functions.values():
        ops |= {node.op for node in fn.definition.node_def}
    assert "ResourceApplyAdam" in ops
    assert "Sqrt" not in ops  # Keras' path takes sqrt(v) itself


def test_amsgrad_falls_back_to_keras():
    ours = _train(optimizers.Adam(learning_rate=3e-2, amsgrad=True), False)
    theirs = _train(keras.optimizers.Adam(learning_rate=3e-2, amsgrad=True), False)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, atol=2e-6, rtol=1e-5)


def test_round_trips_through_keras_file(tmp_path):
    model = _train(optimizers.AdamW(learning_rate=1e-2, weight_decay=0.05), False, steps=4)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.optimizer) is optimizers.AdamW
    assert loaded.optimizer.weight_decay == pytest.approx(0.05)
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
