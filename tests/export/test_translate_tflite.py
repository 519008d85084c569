"""The Transformer's encode/decode TFLite signatures translate like the Keras model."""

import keras
import numpy as np

from export import export as exporter
from export.translate import TFLiteTranslator
from keras_zoo.models.transformer import Transformer


def test_tflite_greedy_translation_equals_keras(tmp_path):
    keras.utils.set_random_seed(0)
    model = Transformer(vocab_size=64, hidden_dim=32, num_encoder_layers=2, num_decoder_layers=2,
                        num_heads=2, mlp_dim=64, dropout=0.0, max_source_length=12,
                        max_target_length=12)
    path = str(tmp_path / "transformer.tflite")
    info = exporter.export_model(model, path, format="tflite")
    assert info["ops"]["flex"] == [] and info["ops"]["custom"] == []
    assert "DYNAMIC_UPDATE_SLICE" in info["ops"]["builtin"]  # the cache write, a builtin
    rng = np.random.default_rng(0)
    sources = [list(rng.integers(4, 64, n)) + [3] for n in (1, 3, 5, 8, 11)]
    expected = model.translate_ids(sources, beam_size=1, max_length=12)
    translator = TFLiteTranslator(path)
    got = [translator.translate_ids([int(t) for t in s], max_length=12) for s in sources]
    assert got == expected
    assert any(len(g) > 2 for g in got)  # the comparison covers several decoding steps
