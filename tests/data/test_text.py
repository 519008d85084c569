import pytest
import tensorflow_datasets as tfds

from keras_zoo import data
from keras_zoo.data import text


def test_bundled_translation_splits_share_no_source_sentence():
    splits = {s: {r["en"] for r in text.read_bundled("gettext_en_de", s)}
              for s in text.SPLITS}
    assert len(splits["train"]) > 30_000 and len(splits["test"]) > 1_000
    assert not splits["train"] & splits["test"]
    assert not splits["train"] & splits["validation"]
    assert not splits["validation"] & splits["test"]
    ds, info = text.load("gettext_en_de:test")
    assert (info.task, info.languages, info.num_examples) == \
        ("translation", ("en", "de"), len(splits["test"]))
    first = next(iter(ds))
    assert set(first) == {"source", "target"}
    assert first["source"].numpy().decode() in splits["test"]


def test_prose_documents_are_split_by_document():
    ids = {s: {r["id"] for r in text.read_bundled("english_prose", s)} for s in text.SPLITS}
    assert not ids["train"] & ids["test"] and not ids["train"] & ids["validation"]
    ds, info = text.load("english_prose:validation")
    assert info.task == "documents" and info.num_examples == len(ids["validation"])
    assert len(next(iter(ds))["text"].numpy()) > 40


def test_tfds_translation_set_through_mock_data():
    with tfds.testing.mock_data(num_examples=6):
        ds, info = text.load("tfds:ted_hrlr_translate/pt_to_en:validation")
        assert info.task == "translation" and info.languages == ("pt", "en")
        assert set(next(iter(ds))) == {"source", "target"}


def test_wrong_kind_of_dataset_says_so_in_one_line():
    _, info = text.load("english_prose:test")
    with pytest.raises(data.DatasetError, match="trains on a translation dataset"):
        text.require_task(info, "translation", "Transformer")
    with pytest.raises(data.DatasetError, match="not a text set"):
        text.load("tfds:mnist")
    with pytest.raises(data.DatasetError, match="Did you mean gettext_en_de"):
        text.parse_spec("gettext_en_dee")
    with pytest.raises(data.DatasetError, match="split must be one of"):
        text.parse_spec("gettext_en_de:dev")
    with pytest.raises(data.DatasetError, match="too many"):
        text.parse_spec("gettext_en_de:test:extra")
    assert data.is_text_spec("gettext_en_fr:test") and not data.is_text_spec("digits")


def test_an_image_model_refuses_a_text_dataset():
    import keras_zoo

    model = keras_zoo.from_preset("lenet5")
    with pytest.raises(data.DatasetError, match="is text; LeNet trains on images"):
        model.load_data("gettext_en_de")


def test_a_translation_spec_can_pick_its_direction():
    _, forward = text.load("gettext_en_de:test")
    ds, info = text.load("gettext_en_de:test:de-en")
    assert forward.languages == ("en", "de") and info.languages == ("de", "en")
    pair = next(iter(ds))
    record = text.read_bundled("gettext_en_de", "test")[0]
    assert pair["source"].numpy().decode() == record["de"]
    assert pair["target"].numpy().decode() == record["en"]
    assert text.parse_spec("tfds:wmt14_translate/de-en:train:en-de") == \
        ("tfds", "wmt14_translate/de-en", "train")
    assert text.direction("tfds:wmt14_translate/de-en:train:en-de") == ("en", "de")
    with pytest.raises(data.DatasetError, match="translates between en-de, not en-fr"):
        text.load("gettext_en_de:test:en-fr")
