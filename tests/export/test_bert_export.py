"""A BERT classifier through the generic exporter: four TFLite modes, calibrated and
verified on tokenized text that the family supplies (ZooModel.representative_inputs)."""

import numpy as np
import pytest

import keras_zoo
from export import export_tflite, verify_export
from export.export import check_spec, sample_inputs, signature_specs
from keras_zoo.data import DatasetError, text
from keras_zoo.data.tokenizers import WordPieceTokenizer
from keras_zoo.training import optimizers

BOUNDS = {"none": 1e-4, "float16": 1e-2, "dynamic_int8": 0.1}


@pytest.fixture(scope="module")
def classifier():
    """A small BERT trained for a few hundred steps on gettext_packages (int8
    agreement means nothing on a random model's near-tied logits)."""
    import keras

    keras.utils.set_random_seed(0)
    records = text.read_bundled("gettext_en_de", "train")
    tokenizer = WordPieceTokenizer.train([r["en"] for r in records], vocab_size=1000)
    model = keras_zoo.BERT(vocab_size=1000, hidden_dim=64, num_layers=1, num_heads=2,
                           intermediate_dim=128, max_sequence_length=64, sequence_length=32,
                           task="classification", num_classes=8, dropout=0.0,
                           attention_dropout=0.0)
    model.tokenizer = tokenizer
    examples, info = model.load_data("gettext_packages", "train")
    batches = model.batch_data(examples.shuffle(10_000, seed=0), info, 64, training=True)
    model.compile(optimizer=optimizers.AdamW(3e-3), **{
        k: v for k, v in model.compile_defaults().items() if k != "metrics"})
    model.fit(batches.repeat(), steps_per_epoch=300, epochs=1, verbose=0)
    return model


def test_family_supplies_tokenized_calibration_data(classifier):
    specs = signature_specs(classifier, 1)
    _, inputs, _ = specs["serving_default"]
    assert [(n, s) for n, s, _ in inputs] == [("padding_mask", (1, 32)),
                                              ("segment_ids", (1, 32)), ("token_ids", (1, 32))]
    arrays, labels = sample_inputs(inputs, "gettext_packages:test", 50, "test",
                                   model=classifier)
    assert arrays["token_ids"].shape == (50, 32) and labels.shape == (50,)
    assert np.all(arrays["token_ids"][:, 0] == classifier.tokenizer.cls_id)
    # An image spec is not the family's: the exporter keeps its own data.
    assert classifier.representative_inputs("digits:train", "train", 5) is None


@pytest.mark.slow
def test_four_tflite_modes_match_keras_and_int8_agrees(classifier, tmp_path):
    outputs = {q: str(tmp_path / f"{q}.tflite") for q in
               ("none", "float16", "dynamic_int8", "int8")}
    files = export_tflite(classifier, outputs, representative_data="gettext_packages:train",
                          calibration_samples=200)
    reports = {}
    for quantization, result in files.items():
        assert result["ops"]["flex"] == [] and result["ops"]["custom"] == []
        report = verify_export(classifier, result, "gettext_packages:test",
                               num_samples=376)["serving_default"]
        reports[quantization] = report
        assert report["num_samples"] == 376
        if quantization in BOUNDS:
            assert report["relative_diff"] <= BOUNDS[quantization], (quantization, report)
    # it learned the task: 8 balanced classes (47 test texts each), chance 0.125;
    # 300 steps reach 0.45-0.6 depending on thread scheduling
    assert reports["none"]["keras_accuracy"] > 0.3
    assert reports["int8"]["top1_agreement"] >= 0.9, reports["int8"]
    assert reports["int8"]["exported_accuracy"] >= reports["int8"]["keras_accuracy"] - 0.05


def test_text_specs_pass_the_exporters_spec_check():
    assert check_spec("gettext_packages:train") == ("bundled", "gettext_packages", "train")
    assert check_spec("gettext_packages", "test") == ("bundled", "gettext_packages", "test")
    assert check_spec("digits") == ("bundled", "digits", "train")
    with pytest.raises(DatasetError, match="gettext_packages:tests"):
        check_spec("gettext_packages:tests")
    with pytest.raises(DatasetError, match="unknown dataset 'nonesuch'"):
        check_spec("nonesuch")
