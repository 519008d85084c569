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


def _official_bert_steps(weights, grads, decayed, peak, total, warmup, clip=1.0, wd=0.01,
                         beta_1=0.9, beta_2=0.999, epsilon=1e-6):
    """google-research/bert optimization.py, in NumPy: create_optimizer's
    schedule, clip_by_global_norm, AdamWeightDecayOptimizer.apply_gradients."""
    weights = [w.astype(np.float64) for w in weights]
    m = [np.zeros_like(w) for w in weights]
    v = [np.zeros_like(w) for w in weights]
    for step, g in enumerate(grads):  # global_step before the update
        lr = peak * (1 - min(step, total) / total)  # polynomial_decay, power 1, end 0
        if warmup and step < warmup:
            lr = peak * step / warmup
        norm = np.sqrt(sum((x.astype(np.float64) ** 2).sum() for x in g))
        g = [x * clip / max(norm, clip) for x in g]
        for i, (w, x) in enumerate(zip(weights, g)):
            m[i] = beta_1 * m[i] + (1 - beta_1) * x
            v[i] = beta_2 * v[i] + (1 - beta_2) * x * x
            update = m[i] / (np.sqrt(v[i]) + epsilon)
            if decayed[i]:
                update = update + wd * w
            weights[i] = w - lr * update
    return weights


@pytest.mark.parametrize("jit_compile", [False, True])
def test_adam_weight_decay_is_berts_optimizer(jit_compile):
    from keras_zoo.training.schedules import LinearDecayWithWarmup

    rng = np.random.default_rng(0)
    shapes = [(5, 4), (4,), (3, 5)]  # kernel (decayed), bias (not), table (decayed)
    start = [rng.normal(size=s).astype("float32") for s in shapes]
    grads = [[rng.normal(size=s).astype("float32") for s in shapes] for _ in range(5)]
    variables = [keras.Variable(w) for w in start]
    schedule = LinearDecayWithWarmup(0.1, total_steps=8, warmup_steps=2)
    optimizer = optimizers.AdamWeightDecay(schedule, global_clipnorm=1.0)
    assert (optimizer.weight_decay, optimizer.epsilon) == (0.01, 1e-6)
    optimizer.exclude_from_weight_decay(var_list=[variables[1]])

    @tf.function(jit_compile=jit_compile)
    def apply(g):
        optimizer.apply_gradients(zip(g, variables))

    for g in grads:
        apply(g)
    # Keras holds beta_2 in float32 and takes 1 - float32(0.999) = 0.00099998713 (the
    # official computes 1 - 0.999 in Python): a 1.3e-5 relative difference in the
    # second moment, not the formula's; the reference uses Keras' constants
    f32 = lambda x: float(np.float32(x))  # noqa: E731
    expected = _official_bert_steps(start, grads, [True, False, True], 0.1, 8, 2,
                                    beta_1=f32(0.9), beta_2=f32(0.999), epsilon=f32(1e-6))
    for variable, want, w0 in zip(variables, expected, start):
        # float32 arithmetic on values of ~1: a few ulps of the moved distance
        np.testing.assert_allclose(np.asarray(variable), want, rtol=0, atol=2e-6)
        assert np.abs(want - w0).max() > 1e-2  # the steps moved the weights
    # the schedule itself: 0 at step 0, linear warm-up, then the decay line from step 0
    got = [float(schedule(s)) for s in (0, 1, 2, 4, 8, 20)]
    np.testing.assert_allclose(got, [0.0, 0.05, 0.075, 0.05, 0.0, 0.0], atol=1e-7)


def test_adam_weight_decay_has_no_bias_correction_unlike_adam():
    # the first step of Adam moves every weight by ~lr; without bias correction
    # the official moves it by lr * (1 - beta_1) / sqrt(1 - beta_2) = 3.16 lr
    for cls, expected in ((optimizers.Adam, 1.0), (optimizers.AdamWeightDecay, 0.1 / 0.001 ** 0.5)):
        w = keras.Variable(np.zeros(3, "float32"))
        kwargs = {"weight_decay": 0.0} if cls is optimizers.AdamWeightDecay else {}
        cls(learning_rate=1e-3, epsilon=1e-12, **kwargs).apply_gradients(
            [(tf.constant([1.0, -2.0, 0.5]), w)])
        np.testing.assert_allclose(np.abs(np.asarray(w)), expected * 1e-3, rtol=1e-5)
