"""The Transformer's encode/decode TFLite signatures translate like the Keras model."""

import keras
import numpy as np

from export import export as exporter
from export.translate import TFLiteTranslator
from keras_zoo.models.transformer import Transformer


def test_tflite_greedy_translation_equals_keras(tmp_path):
    keras.utils.set_random_seed(0)
    # max_target_length 64 > the shortest source + 50: the default output limit
    # (each sentence's own length + 50) is what both sides must agree on
    model = Transformer(vocab_size=64, hidden_dim=32, num_encoder_layers=2, num_decoder_layers=2,
                        num_heads=2, mlp_dim=64, dropout=0.0, max_source_length=12,
                        max_target_length=64)
    path = str(tmp_path / "transformer.tflite")
    info = exporter.export_model(model, path, format="tflite")
    assert info["ops"]["flex"] == [] and info["ops"]["custom"] == []
    assert "DYNAMIC_UPDATE_SLICE" in info["ops"]["builtin"]  # the cache write, a builtin
    rng = np.random.default_rng(0)
    sources = [list(rng.integers(4, 64, n)) + [3] for n in (1, 3, 5, 8, 11)]
    expected = model.translate_ids(sources, beam_size=1)  # one batch, very different lengths
    translator = TFLiteTranslator(path)
    got = [translator.translate_ids([int(t) for t in s]) for s in sources]
    assert got == expected
    assert any(len(g) > 2 for g in got)  # the comparison covers several decoding steps
    # a short source stopped at its own limit, not at the batch's longest + 50
    assert any(len(g) == len(s) + 50 < 64 for g, s in zip(got, sources))


def test_saved_model_carries_the_signatures_and_the_vocabulary(tmp_path):
    import tensorflow as tf

    from keras_zoo.data.tokenizers import SentencePieceTokenizer, Tokenizer

    keras.utils.set_random_seed(1)
    model = Transformer(vocab_size=300, hidden_dim=32, num_encoder_layers=1,
                        num_decoder_layers=1, num_heads=2, mlp_dim=64, dropout=0.0,
                        max_source_length=8, max_target_length=8)
    model.tokenizer = SentencePieceTokenizer.train(
        ["File not found", "Datei nicht gefunden", "Permission denied"] * 30, vocab_size=300)
    path = str(tmp_path / "saved")
    exporter.export_model(model, path, format="saved_model")
    loaded = Tokenizer.load(str(tmp_path / "saved" / "assets" / "tokenizer"))
    assert loaded.encode("File not found") == model.tokenizer.encode("File not found")
    served = tf.saved_model.load(path).signatures["encode"]
    source = np.array([[5, 6, 3, 0, 0, 0, 0, 0]], np.int32)
    _, cross, _mask = model.encode(source)
    out = served(source_ids=tf.constant(source))
    np.testing.assert_allclose(out["cross_cache"].numpy(), keras.ops.convert_to_numpy(cross),
                               atol=1e-5)
    np.testing.assert_array_equal(out["source_mask"].numpy()[0], [1, 1, 1, 0, 0, 0, 0, 0])
