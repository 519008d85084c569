"""Autoencoder (dense, conv) and SparseAutoencoder: objective, training, round trips, errors."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_zoo
from keras_zoo.data.datasets import DatasetError, load_arrays
from keras_zoo.models.autoencoder import kl_bernoulli

AE_PRESETS = ["autoencoder_digits", "conv_autoencoder_digits", "sparse_autoencoder_digits"]


@pytest.fixture(scope="module")
def digits():
    x, y, _ = load_arrays("digits", "train", 32, 1)
    return x, y


def _images(n=4, seed=1):
    return np.random.default_rng(seed).random((n, 32, 32, 1)).astype("float32")


@pytest.mark.parametrize("variant", ["dense", "conv"])
def test_reconstruction_term_is_summed_pixel_cross_entropy(variant):
    model = keras_zoo.Autoencoder(variant=variant, hidden_units=[32], conv_filters=[8, 16],
                                  latent_dim=8)
    x = _images()
    p = np.asarray(model.predict(x, verbose=0), "float64")
    assert p.shape == x.shape
    expected = -np.mean(np.sum(x * np.log(p) + (1 - x) * np.log(1 - p), axis=(1, 2, 3)))
    terms = model.loss_terms(x, training=False)
    np.testing.assert_allclose(float(terms["reconstruction"]), expected, rtol=1e-4)
    assert float(terms["loss"]) == float(terms["reconstruction"])  # no penalty in a plain AE


def test_conv_train_step_compiles_with_xla_and_learns_digits(digits):
    x, y = digits
    model = keras_zoo.Autoencoder(variant="conv", conv_filters=[8, 16], hidden_units=[],
                                  latent_dim=16)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=True,
                  **model.compile_defaults())
    x, y = x[:256], y[:256]
    before = model.evaluate_dataset(x[:256])["reconstruction"]
    # Labels ride along as the trainer feeds them and must be ignored.
    history = model.fit(x, y, batch_size=32, epochs=4, verbose=0)
    assert model.jit_compile is True
    assert set(history.history) == {"loss", "reconstruction"}
    after = model.evaluate_dataset(x[:256])["reconstruction"]
    assert after < 0.8 * before, (before, after)


def test_sparse_mean_activation_approaches_target(digits):
    x, _ = digits
    target = 0.05
    # The reconstruction is summed over 1024 pixels (hundreds of nats), so the
    # penalty needs a weight of that order to dominate within a few epochs.
    model = keras_zoo.SparseAutoencoder(latent_dim=64, sparsity_target=target,
                                        sparsity_weight=100.0)
    start = float(np.mean(model.encode(x[:512])))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True,
                  **model.compile_defaults())
    model.fit(x, batch_size=64, epochs=4, verbose=0)
    rho_hat = np.asarray(model.encode(x)).mean(axis=0)
    # Sigmoid codes start near 0.5; the KL penalty pulls every unit's mean down.
    assert abs(start - target) > 0.3
    assert abs(rho_hat.mean() - target) < 0.015, rho_hat.mean()
    assert np.mean(np.abs(rho_hat - target) < 0.03) > 0.9


def test_kl_bernoulli_is_zero_only_at_the_target():
    rho_hat = np.linspace(0.01, 0.99, 99).astype("float32")
    kl = np.asarray(kl_bernoulli(0.05, rho_hat))
    assert kl.min() >= 0 and np.argmin(kl) == 4  # rho_hat[4] == 0.05
    assert kl[4] < 1e-6 and np.all(np.diff(kl[4:]) > 0) and np.all(np.diff(kl[:5]) < 0)


def test_sparse_autoencoder_ng_is_ngs_objective_term_for_term():
    # CS294A notes: J = (1/m) sum_i 1/2 ||x_hat_i - x_i||^2 + (lambda/2) sum W^2
    #                   + beta sum_j KL(rho || rho_hat_j), lambda 1e-4, beta 3, rho 0.01.
    model = keras_zoo.SparseAutoencoder.from_preset("sparse_autoencoder_ng")
    x = np.random.default_rng(2).random((16, 8, 8, 1)).astype("float32")
    terms = {k: float(v) for k, v in model.loss_terms(x, training=False).items()}
    x_hat = np.asarray(model.predict(x, verbose=0), "float64")
    half_squared = np.mean(0.5 * np.sum((x_hat - x) ** 2, axis=(1, 2, 3)))
    np.testing.assert_allclose(terms["reconstruction"], half_squared, rtol=1e-5)
    code = np.asarray(model.encoder(x), "float64")
    rho_hat = code.mean(axis=0)
    kl = np.sum(0.01 * np.log(0.01 / rho_hat) + 0.99 * np.log(0.99 / (1 - rho_hat)))
    decay = 0.5 * 1e-4 * sum(np.sum(w ** 2) for w in model.get_weights() if w.ndim == 2)
    np.testing.assert_allclose(terms["loss"], half_squared + 3.0 * kl + decay, rtol=1e-5)
    assert model.get_zoo_config()["reconstruction_loss"] == "mse"


def test_sparsity_weight_and_decay_enter_the_loss():
    model = keras_zoo.SparseAutoencoder(latent_dim=16, sparsity_weight=2.0, weight_decay=0.1)
    terms = {k: float(v) for k, v in model.loss_terms(_images(), training=False).items()}
    decay = 0.05 * sum(float(np.sum(np.square(w))) for w in model.get_weights()
                       if w.ndim == 2)
    np.testing.assert_allclose(
        terms["loss"], terms["reconstruction"] + 2.0 * terms["sparsity"] + decay, rtol=1e-5)


@pytest.mark.parametrize("name", AE_PRESETS)
def test_keras_file_and_preset_round_trip(name, tmp_path):
    model = keras_zoo.from_preset(name)
    x = _images(2)
    before = np.asarray(model.predict(x, verbose=0))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded) is type(model) and loaded.get_zoo_config() == model.get_zoo_config()
    np.testing.assert_array_equal(np.asarray(loaded.predict(x, verbose=0)), before)
    model.save_to_preset(str(tmp_path / "p"))
    again = keras_zoo.from_preset(str(tmp_path / "p"))
    np.testing.assert_array_equal(np.asarray(again.predict(x, verbose=0)), before)


def test_serving_signatures_compose_to_the_model():
    model = keras_zoo.Autoencoder.from_preset("conv_autoencoder_digits")
    sig = model.serving_signatures()
    assert set(sig) == {"encoder", "decoder"}
    x = _images(2)
    code = sig["encoder"](x)
    assert code.shape == (2, 32)
    np.testing.assert_allclose(np.asarray(sig["decoder"](code)),
                               np.asarray(model.predict(x, verbose=0)), atol=1e-6)
    ends = np.asarray(model.interpolate(x[0], x[1], steps=5))
    assert ends.shape == (5, 32, 32, 1)
    np.testing.assert_allclose(ends[[0, -1]], np.asarray(model.predict(x, verbose=0)),
                               atol=1e-5)


def test_bad_configs_and_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="variant must be one of .*'mlp'"):
        keras_zoo.Autoencoder(variant="mlp")
    with pytest.raises(ValueError, match="image_size=30 is not divisible by 4"):
        keras_zoo.Autoencoder(variant="conv", image_size=30, conv_filters=[8, 16])
    with pytest.raises(ValueError, match=r"sparsity_target must be in \(0, 1\), got 1.5"):
        keras_zoo.SparseAutoencoder(sparsity_target=1.5)
    with pytest.raises(ValueError, match="reconstruction_loss must be one of"):
        keras_zoo.Autoencoder(reconstruction_loss="l1")
    model = keras_zoo.Autoencoder(hidden_units=[16], latent_dim=4)
    with pytest.raises(DatasetError, match="yielded no images"):
        model.evaluate_dataset(tf.data.Dataset.from_tensor_slices(
            (np.zeros((0, 32, 32, 1), "float32"), np.zeros((0,), "int32"))).batch(8))
    with pytest.raises(DatasetError, match=r"non-empty .* got shape \(0, 32, 32, 1\)"):
        model.evaluate_dataset(np.zeros((0, 32, 32, 1)))
    with pytest.raises(ValueError, match=r"expects inputs of shape \(batch, 32, 32, 1\)"):
        model.encode(np.zeros((1, 28, 28, 1)))


_MIRRORED_SCRIPT = textwrap.dedent("""
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, keras_zoo

    x = np.random.default_rng(0).random((8, 32, 32, 1)).astype("float32")
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

    def one_step(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = keras_zoo.Autoencoder(hidden_units=[16], latent_dim=4)
            model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=False,
                          **model.compile_defaults())
            start = model.get_weights()
        logs = model.fit(x, batch_size=8, epochs=1, shuffle=False, verbose=0).history
        return [w - s for w, s in zip(model.get_weights(), start)], logs["loss"][0]

    d1, l1 = one_step(tf.distribute.get_strategy())
    d2, l2 = one_step(mirrored)
    with mirrored.scope():
        vae = keras_zoo.VAE(hidden_units=[16], latent_dim=4, seed=0)
        vae.compile(optimizer="adam", jit_compile=False, **vae.compile_defaults())
    vae_logs = vae.fit(x, batch_size=8, epochs=2, verbose=0).history
    eps = mirrored.experimental_local_results(tf.function(lambda: mirrored.run(
        lambda: vae.reparameterize(tf.zeros((2, 4)), tf.zeros((2, 4)))))())
    print(json.dumps({
        "update": max(float(np.max(np.abs(a))) for a in d1),
        "difference": max(float(np.max(np.abs(a - b))) for a, b in zip(d1, d2)),
        "losses": [float(l1), float(l2)],
        "vae_logs": {k: [float(v) for v in vs] for k, vs in vae_logs.items()},
        "same_eps": bool(np.allclose(np.asarray(eps[0]), np.asarray(eps[1]))),
    }))
""")


@pytest.mark.slow
def test_mirrored_two_replicas_match_one_device_and_draw_their_own_noise():
    """Under MirroredStrategy over 2 logical CPUs: two replicas of 4 images
    update the weights exactly as one device on the same 8 images (the
    per-replica loss scaling) and report the same loss; the VAE trains and
    each replica draws its own eps."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", _MIRRORED_SCRIPT], check=False,
                          capture_output=True, text=True, env=env, timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["difference"] < 1e-3 * out["update"], out
    np.testing.assert_allclose(*out["losses"], rtol=1e-5)
    assert set(out["vae_logs"]) == {"loss", "reconstruction", "kl", "elbo"}
    assert np.all(np.isfinite(out["vae_logs"]["loss"])), out["vae_logs"]
    assert not out["same_eps"]
