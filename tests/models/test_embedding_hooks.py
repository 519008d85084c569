"""The embedding hook of every family (ZooModel.embedding_model / embed)."""

import keras
import numpy as np
import pytest

import keras_zoo
from keras_zoo.models.base import EmbeddingError, ZooModel, _families_with_embeddings

RNG = np.random.default_rng(0)
IMAGES = RNG.random((6, 32, 32, 1)).astype("float32")


def _randomise(model, scale=0.2, seed=1):
    """Non-zero weights everywhere (a ViT head starts at zero, which would
    hide a wrong embedding behind equal logits)."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.normal(0.0, scale, w.shape).astype(w.dtype))
    return model


# The image families and their hooks; text families add theirs in their own files.
IMAGE_FAMILIES = ("MLP", "LeNet", "ResNet", "ViT", "Autoencoder", "SparseAutoencoder", "VAE",
                  "MAE", "DINO", "LatentClassifier")


def test_every_image_family_has_an_embedding_hook():
    with_hook = _families_with_embeddings()
    assert set(IMAGE_FAMILIES) <= set(with_hook), sorted(set(IMAGE_FAMILIES) - set(with_hook))


@pytest.mark.parametrize("preset", [p for f in IMAGE_FAMILIES
                                    for p in keras_zoo.list_presets(f, tiny=True)])
def test_every_tiny_preset_has_an_embedding_by_the_contract(preset):
    model = keras_zoo.from_preset(preset)
    kinds = model.embedding_kinds()
    assert kinds, f"{preset} has no embedding hook"
    for kind in kinds:
        emb = model.embedding_model(kind)
        assert isinstance(emb, keras.Model)
        assert [tuple(t.shape) for t in emb.inputs] == [tuple(t.shape) for t in model.inputs]
        assert len(emb.outputs) == 1 and emb.outputs[0].dtype == "float32"
        assert emb.output_names == ["embedding"]
        assert len(emb.outputs[0].shape) == 2 and emb.outputs[0].shape[1] is not None
        z = model.embed(IMAGES, batch_size=4, kind=kind)  # 4 + a padded batch of 2
        assert z.shape == (6, emb.outputs[0].shape[1]) and z.dtype == np.float32
        np.testing.assert_allclose(z, np.asarray(emb(IMAGES, training=False)), atol=1e-5)
    assert model.embedding_model() is model.embedding_model(kinds[0])  # cached, default first
    assert "embedding" in model.export_signatures()


@pytest.mark.parametrize("preset, layer", [
    ("mlp_small", "head"), ("lenet5", "head"), ("resnet_tiny_digits", "head"),
    ("vit_tiny_digits", "head"), ("pixel_classifier_digits", "head"),
])
def test_a_classifier_embedding_is_what_its_head_reads(preset, layer):
    model = _randomise(keras_zoo.from_preset(preset))
    z = model.embed(IMAGES)
    logits = np.asarray(model(IMAGES, training=False))
    np.testing.assert_allclose(np.asarray(model.get_layer(layer)(z)), logits, atol=1e-4)


def test_vit_cls_and_mean_tokens():
    vit = _randomise(keras_zoo.ViT.from_preset("vit_tiny_digits"))
    tokens = keras_zoo.ViT.from_preset("vit_tiny_digits", pooling=None)
    tokens.set_weights(vit.get_weights()[:-2])  # all but the head's kernel and bias
    sequence = np.asarray(tokens(IMAGES, training=False))  # (6, 1 + 16, 64)
    np.testing.assert_allclose(vit.embed(IMAGES, kind="cls"), sequence[:, 0], atol=1e-5)
    np.testing.assert_allclose(vit.embed(IMAGES, kind="mean"), sequence[:, 1:].mean(axis=1),
                               atol=1e-5)
    gap = keras_zoo.ViT.from_preset("vit_tiny_digits", pooling="gap")
    assert gap.embedding_kinds()[0] == "mean"  # the default follows what the head reads


def test_codec_embeddings_are_the_code_and_the_posterior_mean():
    ae = _randomise(keras_zoo.from_preset("autoencoder_digits"))
    np.testing.assert_allclose(ae.embed(IMAGES), np.asarray(ae.code(IMAGES)), atol=1e-5)
    sae = _randomise(keras_zoo.from_preset("sparse_autoencoder_digits"))
    assert sae.embedding_kinds() == ("code",)
    z = sae.embed(IMAGES)
    assert z.shape == (6, 256) and (z > 0).all() and (z < 1).all()  # sigmoid units
    vae = _randomise(keras_zoo.from_preset("vae_digits"))
    mean, log_var = (np.asarray(t) for t in vae.encode(IMAGES))
    assert vae.embedding_kinds() == ("mean",)
    np.testing.assert_allclose(vae.embed(IMAGES), mean, atol=1e-5)
    assert not np.allclose(mean, log_var, atol=1e-2)
    np.testing.assert_array_equal(vae.embed(IMAGES), vae.embed(IMAGES))  # no sampling


def test_mae_embeds_the_unmasked_encoder():
    mae = _randomise(keras_zoo.from_preset("mae_tiny_digits"))
    tokens = np.asarray(mae.encoder()(IMAGES, training=False))  # (6, 1 + 64, 64)
    np.testing.assert_allclose(mae.embed(IMAGES), tokens[:, 0], atol=1e-5)
    np.testing.assert_allclose(mae.embed(IMAGES, kind="mean"), tokens[:, 1:].mean(axis=1),
                               atol=1e-5)
    np.testing.assert_array_equal(mae.embed(IMAGES), mae.embed(IMAGES))  # no random mask


def test_dino_embeds_the_teacher_backbone_not_the_student():
    dino = keras_zoo.from_preset("dino_vit_tiny_digits")
    _randomise(dino.teacher_backbone, seed=2)  # teacher and student now differ
    teacher = np.asarray(dino.teacher_backbone(IMAGES, training=False))
    student = np.asarray(dino.student_backbone(IMAGES, training=False))
    assert not np.allclose(teacher, student, atol=1e-3)
    np.testing.assert_allclose(dino.embed(IMAGES), teacher, atol=1e-5)
    assert dino.embedding_kinds() == ("cls", "mean")


def test_latent_classifier_code_is_its_encoders_embedding():
    vae = _randomise(keras_zoo.from_preset("vae_digits"))
    classifier = keras_zoo.LatentClassifier(encoder=vae)
    np.testing.assert_allclose(classifier.embed(IMAGES, kind="code"), vae.embed(IMAGES),
                               atol=1e-5)
    assert classifier.embed(IMAGES).shape == (6, 64)  # penultimate: the hidden layer


def test_the_embedding_follows_the_models_weights():
    model = keras_zoo.from_preset("lenet5")
    before = model.embed(IMAGES)
    _randomise(model, seed=3)  # after the sub-model was built and cached
    after = model.embed(IMAGES)
    assert not np.allclose(before, after, atol=1e-3)
    np.testing.assert_allclose(model.get_layer("head")(after), model(IMAGES), atol=1e-4)


class _NoHook(ZooModel):
    def __init__(self, name="no_hook", **kwargs):
        inputs = keras.Input((4,), name="x")
        super().__init__(inputs=inputs, outputs=keras.layers.Dense(2)(inputs), name=name,
                         **kwargs)


def test_a_model_without_a_hook_says_so_in_one_line():
    model = _NoHook()
    with pytest.raises(EmbeddingError) as info:
        model.embed(np.zeros((2, 4), "float32"))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("_NoHook has no embedding hook (embedding_model)")
    assert "LeNet" in message and "ViT" in message  # the families that have one
    assert "embedding" not in model.export_signatures()
    assert model.embedding_kinds() == ()


def test_bad_kind_and_bad_shape_are_one_line_errors():
    vit = keras_zoo.from_preset("vit_tiny_digits")
    with pytest.raises(ValueError, match=r"^ViT has no embedding kind 'gap'; its kinds: "
                                         r"cls, mean$"):
        vit.embedding_model("gap")
    with pytest.raises(ValueError, match=r"^ViT.embed expects inputs of shape "
                                         r"\(N, 32, 32, 1\); got \(2, 28, 28, 1\)$"):
        vit.embed(np.zeros((2, 28, 28, 1), "float32"))


@pytest.mark.parametrize("preset", ["vit_tiny_digits", "vae_digits"])
def test_models_save_and_load_after_their_embedding_was_built(tmp_path, preset):
    model = _randomise(keras_zoo.from_preset(preset))
    expected = model.embed(IMAGES)  # adds nodes after the encoder's last layer
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [w.path for w in loaded.weights] == [w.path for w in model.weights]
    np.testing.assert_allclose(loaded.embed(IMAGES), expected, atol=1e-5)
    model.save_to_preset(str(tmp_path / "preset"))
    np.testing.assert_allclose(keras_zoo.from_preset(str(tmp_path / "preset")).embed(IMAGES),
                               expected, atol=1e-5)
