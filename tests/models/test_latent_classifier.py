"""LatentClassifier: frozen encoder, trained weights carried over, round trips, errors."""

import keras
import numpy as np
import pytest

import keras_zoo


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 32, 32, 1)).astype("float32"), rng.integers(0, 10, n)


@pytest.fixture(scope="module")
def trained_vae_folder(tmp_path_factory):
    """A VAE whose weights differ from any fresh initialisation, saved as a preset."""
    vae = keras_zoo.VAE(hidden_units=[32], latent_dim=4, seed=0)
    rng = np.random.default_rng(3)
    vae.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype)
                     for w in vae.get_weights()])
    folder = str(tmp_path_factory.mktemp("vae") / "preset")
    vae.save_to_preset(folder)
    return vae, folder


def test_encoder_is_frozen_during_fit_and_only_the_head_trains(trained_vae_folder):
    vae, folder = trained_vae_folder
    model = keras_zoo.LatentClassifier(encoder=folder, hidden_units=[16], num_classes=10)
    assert [w.path.split("/")[0] for w in model.trainable_weights] == \
        ["head_dense_0", "head_dense_0", "head", "head"]
    encoder_before = [w.copy() for w in model.encoder.get_weights()]
    head_before = model.get_layer("head").get_weights()[0].copy()
    # The encoder came from the preset folder with its trained weights.
    for a, b in zip(encoder_before, vae.encoder.get_weights()):
        np.testing.assert_array_equal(a, b)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True,
                  **model.compile_defaults())
    x, y = _data()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert model.jit_compile is True
    for a, b in zip(encoder_before, model.encoder.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert np.abs(model.get_layer("head").get_weights()[0] - head_before).max() > 1e-3
    # Building from a live model copies it: the caller's VAE stays trainable.
    keras_zoo.LatentClassifier(encoder=vae)
    assert vae.encoder.trainable


def test_round_trips_are_self_contained(trained_vae_folder, tmp_path):
    _, folder = trained_vae_folder
    model = keras_zoo.LatentClassifier(encoder=folder, hidden_units=[16])
    config = model.get_zoo_config()
    assert config["encoder"]["family"] == "VAE"  # data, not the folder path
    x, _ = _data(2)
    before = np.asarray(model.predict(x, verbose=0))
    model.save(tmp_path / "c.keras")
    model.save_to_preset(str(tmp_path / "c"))
    loaded = keras.saving.load_model(tmp_path / "c.keras")
    np.testing.assert_array_equal(np.asarray(loaded.predict(x, verbose=0)), before)
    assert not loaded.encoder.trainable and len(loaded.trainable_weights) == 4
    again = keras_zoo.LatentClassifier.from_preset(str(tmp_path / "c"))
    np.testing.assert_array_equal(np.asarray(again.predict(x, verbose=0)), before)


def test_pixel_baseline_has_the_same_head():
    pixels = keras_zoo.LatentClassifier.from_preset("pixel_classifier_digits")
    codes = keras_zoo.LatentClassifier.from_preset("latent_classifier_vae_digits")
    assert pixels.encoder is None and pixels.get_zoo_config()["encoder"] is None
    for model, width in ((pixels, 32 * 32), (codes, 16)):
        assert model.get_layer("head_dense_0").kernel.shape == (width, 64)
        assert model.get_layer("head").kernel.shape == (64, 10)
    assert pixels(np.zeros((1, 32, 32, 1))).shape == (1, 10)


def test_bad_encoders_are_clear_errors():
    with pytest.raises(TypeError, match="is a ViT; LatentClassifier needs an Autoencoder"):
        keras_zoo.LatentClassifier(encoder="vit_tiny_digits")
    with pytest.raises(ValueError, match="encoder must be None .* got 3"):
        keras_zoo.LatentClassifier(encoder=3)
    with pytest.raises(ValueError, match=r"image_size=28, num_channels=None do not match "
                                         r"the encoder's input \(32, 32, 1\)"):
        keras_zoo.LatentClassifier(encoder="autoencoder_digits", image_size=28)
