"""VAE: the KL term, the reparameterization, the train step, round trips and errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_zoo
from keras_zoo.data.datasets import DatasetError, load_arrays
from keras_zoo.models.vae import kl_to_standard_normal


def _images(n=4, seed=1):
    return np.random.default_rng(seed).random((n, 32, 32, 1)).astype("float32")


def _small_vae(**kw):
    return keras_zoo.VAE(**{"hidden_units": [32], "latent_dim": 3, "seed": 0, **kw})


def _pin_posterior(model, mu, log_var):
    """Makes the encoder output the constants mu / log_var for every image."""
    for name, bias in (("z_mean", mu), ("z_log_var", log_var)):
        layer = model.encoder.get_layer(name)
        kernel, _ = layer.get_weights()
        layer.set_weights([np.zeros_like(kernel), np.asarray(bias, "float32")])


def test_kl_matches_the_closed_form_for_known_mu_and_logvar():
    mu = np.array([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5]], "float32")
    log_var = np.array([[0.0, 0.0, 0.0], [0.3, -1.0, 2.0]], "float32")
    expected = 0.5 * np.sum(mu ** 2 + np.exp(log_var) - 1 - log_var, axis=-1)
    np.testing.assert_allclose(np.asarray(kl_to_standard_normal(mu, log_var)), expected,
                               rtol=1e-6)
    assert expected[0] == 0.0  # q = prior
    # The same number from the general KL between two univariate Gaussians.
    sigma = np.exp(0.5 * log_var[1])
    general = np.sum(np.log(1.0 / sigma) + (sigma ** 2 + mu[1] ** 2) / 2.0 - 0.5)
    np.testing.assert_allclose(expected[1], general, rtol=1e-6)


def test_model_reports_the_closed_form_kl_and_elbo():
    model = _small_vae(beta=2.0)
    mu, log_var = np.array([0.5, -1.0, 2.0]), np.array([0.2, -0.7, 1.1])
    _pin_posterior(model, mu, log_var)
    terms = {k: float(v) for k, v in model.loss_terms(_images(), training=False).items()}
    closed = 0.5 * np.sum(mu ** 2 + np.exp(log_var) - 1 - log_var)
    np.testing.assert_allclose(terms["kl"], closed, rtol=1e-5)
    np.testing.assert_allclose(terms["loss"], terms["reconstruction"] + 2.0 * closed, rtol=1e-5)
    np.testing.assert_allclose(terms["elbo"], -(terms["reconstruction"] + closed), rtol=1e-5)


def test_reparameterized_samples_follow_q_and_carry_gradients_to_both_heads():
    model = _small_vae()
    mu, log_var = np.array([0.5, -1.0, 2.0], "float32"), np.array([0.2, -0.7, 1.1], "float32")
    z = np.asarray(model.reparameterize(np.tile(mu, (20000, 1)), np.tile(log_var, (20000, 1))))
    np.testing.assert_allclose(z.mean(0), mu, atol=0.05)
    np.testing.assert_allclose(z.std(0), np.exp(0.5 * log_var), rtol=0.03)

    model = _small_vae()
    x = _images(8)
    with tf.GradientTape() as tape:
        loss = model.loss_terms(x, training=True)["reconstruction"]  # KL excluded on purpose
    heads = [model.encoder.get_layer(n).kernel for n in ("z_mean", "z_log_var")]
    grads = tape.gradient(loss, heads)
    # Only the sampled z connects the reconstruction to the encoder: non-zero
    # gradients to mu and to logvar are the reparameterization at work.
    for g in grads:
        assert g is not None and float(tf.reduce_max(tf.abs(g))) > 0


def test_train_step_compiles_with_xla_and_improves_the_test_elbo():
    x, y, _ = load_arrays("digits", "train", 32, 1)
    x_test, _, _ = load_arrays("digits", "test", 32, 1)
    model = keras_zoo.VAE.from_preset("vae_digits", seed=0)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), jit_compile=True,
                  **model.compile_defaults())
    before = model.evaluate_dataset(x_test)["elbo"]
    history = model.fit(x[:512], y[:512], batch_size=64, epochs=4, verbose=0).history
    assert model.jit_compile is True
    assert set(history) == {"loss", "reconstruction", "kl", "elbo"}
    np.testing.assert_allclose(history["loss"], np.add(history["reconstruction"],
                                                       history["kl"]), rtol=1e-4)
    after = model.evaluate_dataset(x_test)
    assert after["elbo"] > before + 150, (before, after["elbo"])
    assert after["kl"] > 0
    logs = model.evaluate(x_test[:320], batch_size=64, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "reconstruction", "kl", "elbo"}


@pytest.mark.parametrize("name", ["vae_digits", "conv_vae_digits"])
def test_keras_file_and_preset_round_trip(name, tmp_path):
    model = keras_zoo.VAE.from_preset(name)
    x = _images(2)
    before = np.asarray(model.predict(x, verbose=0))  # reconstruction of the mean: deterministic
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded) is keras_zoo.VAE and loaded.get_zoo_config() == model.get_zoo_config()
    np.testing.assert_array_equal(np.asarray(loaded.predict(x, verbose=0)), before)
    model.save_to_preset(str(tmp_path / "p"))
    again = keras_zoo.from_preset(str(tmp_path / "p"))
    np.testing.assert_array_equal(np.asarray(again.predict(x, verbose=0)), before)
    for a, b in zip(model.encode(x), again.encode(x)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sample_encode_decode_interpolate_and_serving():
    model = _small_vae()
    x = _images(2)
    mu, log_var = model.encode(x)
    assert mu.shape == log_var.shape == (2, 3)
    samples = np.asarray(model.sample(5, seed=1))
    assert samples.shape == (5, 32, 32, 1) and 0 <= samples.min() and samples.max() <= 1
    path = np.asarray(model.interpolate(x[0], x[1], steps=4))
    assert path.shape == (4, 32, 32, 1)
    np.testing.assert_allclose(path[[0, -1]], np.asarray(model.decode(mu)), atol=1e-6)
    np.testing.assert_allclose(np.asarray(model.decode(mu)),
                               np.asarray(model.predict(x, verbose=0)), atol=1e-6)
    sig = model.serving_signatures()
    assert set(sig) == {"encoder", "decoder"}
    served_mu, _ = sig["encoder"](x)
    np.testing.assert_allclose(np.asarray(sig["decoder"](served_mu)),
                               np.asarray(model.decode(mu)), atol=1e-6)


def test_bad_configs_and_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="beta must be >= 0, got -1"):
        _small_vae(beta=-1)
    with pytest.raises(ValueError, match="VAE: latent_dim must be a positive integer, got 0"):
        _small_vae(latent_dim=0)
    model = _small_vae()
    with pytest.raises(ValueError, match=r"sample\(n\) needs n >= 1, got 0"):
        model.sample(0)
    with pytest.raises(ValueError, match="steps >= 2"):
        model.interpolate(_images(1)[0], _images(1)[0], steps=1)
    with pytest.raises(DatasetError, match="yielded no images"):
        model.evaluate_dataset(tf.data.Dataset.from_tensor_slices(
            np.zeros((0, 32, 32, 1), "float32")).batch(4))
