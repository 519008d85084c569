"""keras_zoo.layers.activations: exact GELU with a hand-written gradient."""

import math

import keras
import numpy as np
import tensorflow as tf

from keras_zoo.layers import FeedForward, activations
from tests.float32_tolerance import SAFETY, UNIT_ROUNDOFF


def test_gelu_forward_is_keras_exact_gelu_bit_for_bit():
    x = tf.constant(np.linspace(-8, 8, 4001, dtype="float32"))
    np.testing.assert_array_equal(activations.gelu(x).numpy(),
                                  keras.activations.gelu(x, approximate=False).numpy())


def test_gelu_gradient_is_phi_plus_x_pdf():
    x64 = np.linspace(-8, 8, 4001)
    x = tf.Variable(x64.astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        ours = activations.gelu(x)
        autodiff = keras.activations.gelu(x, approximate=False)
    expected = 0.5 * (1 + np.vectorize(math.erf)(x64 / np.sqrt(2))) + x64 * np.exp(-x64**2 / 2) / np.sqrt(2 * np.pi)
    ours_grad = tape.gradient(ours, x).numpy()
    np.testing.assert_allclose(ours_grad, expected, atol=2e-6)
    np.testing.assert_allclose(ours_grad, tape.gradient(autodiff, x).numpy(), atol=2e-6)


def test_gelu_gradient_under_xla_and_chain_rule():
    x = tf.Variable(np.random.default_rng(0).normal(size=(3, 5)).astype("float32"))
    upstream = tf.constant(np.random.default_rng(1).normal(size=(3, 5)).astype("float32"))

    @tf.function(jit_compile=True)
    def grads():
        with tf.GradientTape(persistent=True) as tape:
            ours = tf.reduce_sum(activations.gelu(x) * upstream)
            theirs = tf.reduce_sum(keras.activations.gelu(x, approximate=False) * upstream)
        return tape.gradient(ours, x), tape.gradient(theirs, x)

    ours, theirs = grads()
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=2e-6)


def test_feedforward_gelu_round_trips_and_other_activations_still_work(tmp_path):
    for activation in ("gelu", "relu"):
        inputs = keras.Input((4, 8))
        model = keras.Model(inputs, FeedForward(16, activation=activation)(inputs))
        x = np.random.default_rng(0).normal(size=(2, 4, 8)).astype("float32")
        path = str(tmp_path / f"{activation}.keras")
        model.save(path)
        np.testing.assert_array_equal(keras.models.load_model(path)(x).numpy(), model(x).numpy())
        fc1, fc2 = model.layers[1].fc1, model.layers[1].fc2
        act = (lambda h: keras.activations.gelu(h, approximate=False)) if activation == "gelu" \
            else keras.activations.relu
        np.testing.assert_allclose(model(x).numpy(), fc2(act(fc1(x))).numpy(), atol=1e-6)


def test_gelu_approximate_is_keras_tanh_gelu_with_its_derivative():
    x = tf.Variable(np.linspace(-8, 8, 4001).astype("float32"))
    x64 = x.numpy().astype(np.float64)  # the float32 points, exactly
    with tf.GradientTape(persistent=True) as tape:
        ours = activations.gelu_approximate(x)
        autodiff = keras.activations.gelu(x, approximate=True)
    np.testing.assert_array_equal(ours.numpy(), autodiff.numpy())
    u = np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64**3)
    expected = 0.5 * (1 + np.tanh(u)) + 0.5 * x64 * (1 - np.tanh(u) ** 2) * np.sqrt(2 / np.pi) \
        * (1 + 3 * 0.044715 * x64**2)
    # float32 error: tanh(u) rounds to within a few units of u = 2**-24 of 1 in
    # the tails, so 1 - tanh(u)**2 carries an absolute error of a few u, which
    # the derivative multiplies by m(x) = 0.5 |x| sqrt(2/pi) (1 + 3 * 0.044715 x**2)
    # (8.5 at x = 5, where the term itself is ~2e-6); the rest is ~u relative.
    multiplier = 0.5 * np.abs(x64) * np.sqrt(2 / np.pi) * (1 + 3 * 0.044715 * x64**2)
    tolerance = SAFETY * UNIT_ROUNDOFF * (1 + multiplier)
    grad = tape.gradient(ours, x).numpy()
    assert np.all(np.abs(grad - expected) <= tolerance), np.max(np.abs(grad - expected) / tolerance)
    theirs = tape.gradient(autodiff, x).numpy()
    assert np.all(np.abs(grad - theirs) <= 2 * tolerance), np.max(np.abs(grad - theirs) / tolerance)
    assert activations.get("gelu_approximate") is activations.gelu_approximate
