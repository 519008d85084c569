"""BERT: published sizes, what segment ids and padding do, heads, round trips, input errors."""

import keras
import numpy as np
import pytest

import keras_zoo
from keras_zoo.data.tokenizers import WordPieceTokenizer
from keras_zoo.models.bert import BERT

SMALL = {"vocab_size": 64, "hidden_dim": 32, "num_layers": 2, "num_heads": 4,
         "intermediate_dim": 64, "max_sequence_length": 24, "sequence_length": 16,
         "max_predictions_per_seq": 4}
HEADS = {"pretraining": {}, "classification": {"num_classes": 3},
         "token_classification": {"num_classes": 5}, "question_answering": {}}


def _randomise(model, seed=0):
    """Random weights everywhere (LayerNorm included), so no mapping hides behind defaults."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype(w.dtype) for w in model.get_weights()])
    return model


def _inputs(batch=2, length=10, seed=1, task=None):
    rng = np.random.default_rng(seed)
    x = {"token_ids": rng.integers(5, 64, (batch, length)).astype("int32"),
         "segment_ids": np.zeros((batch, length), "int32"),
         "padding_mask": np.ones((batch, length), "int32")}
    x["segment_ids"][:, length // 2:] = 1
    if task == "pretraining":
        x["mask_positions"] = np.tile(np.array([1, 3, 4, 7], "int32"), (batch, 1))
    return x


def _numpy(outputs):
    if isinstance(outputs, dict):
        return {k: np.asarray(v) for k, v in outputs.items()}
    return np.asarray(outputs)


@pytest.mark.slow
@pytest.mark.parametrize("name, count", [("bert_base_uncased", 109_482_240),
                                         ("bert_large_uncased", 335_141_888)])
def test_published_parameter_counts(name, count):
    model = keras_zoo.from_preset(name)
    assert model.count_params() == count
    assert model.get_layer("token_embedding").embeddings.shape == (30522, model.get_zoo_config()
                                                                   ["hidden_dim"])


def test_bert_tiny_shape_and_count():
    model = keras_zoo.BERT.from_preset("bert_tiny")
    # embeddings 3,972,864 + 2 blocks x 198,272 + pooler 16,512
    assert model.count_params() == 4_385_920
    out = model({"token_ids": np.array([[2, 7, 8, 3]], "int32")})
    assert out["sequence_output"].shape == (1, 4, 128) and out["pooled_output"].shape == (1, 128)


def test_initialisation_is_truncated_normal_002():
    model = BERT(**SMALL)
    table = np.asarray(model.get_layer("token_embedding").embeddings)
    kernel = np.asarray(model.get_layer("encoder_block_0").attention.qkv.kernel)
    for w in (table, kernel):
        assert np.abs(w).max() <= 0.04 + 1e-6  # truncated at 2 sigma
        assert 0.015 < w.std() < 0.02  # a normal truncated at 2 sigma has std 0.88 sigma
    assert np.all(np.asarray(model.get_layer("embedding_norm").gamma) == 1)


def test_each_table_and_kernel_is_drawn_independently():
    # modeling.py draws every variable on its own; one reused unseeded Keras
    # initializer gave equal qkv kernels in every block and a position table
    # equal to the first rows of the token table.
    keras.utils.set_random_seed(3)
    model = BERT(**SMALL)
    token = np.asarray(model.get_layer("token_embedding").embeddings)
    position = np.asarray(model.get_layer("position_embedding").embeddings)
    segment = np.asarray(model.get_layer("segment_embedding").embeddings)
    assert not np.allclose(position, token[:len(position)])
    assert not np.allclose(segment, token[:len(segment)])
    qkv = [np.asarray(model.get_layer(f"encoder_block_{i}").attention.qkv.kernel)
           for i in range(2)]
    assert not np.allclose(qkv[0], qkv[1])
    # independent draws: the correlation of two tables is ~N(0, 1/n), not 1
    n = segment.size
    assert abs(np.corrcoef(segment.ravel(), token.ravel()[:n])[0, 1]) < 5 / np.sqrt(n)
    keras.utils.set_random_seed(3)  # and still reproducible under one seed
    np.testing.assert_array_equal(
        np.asarray(BERT(**SMALL).get_layer("token_embedding").embeddings), token)


def test_padding_changes_nothing_at_real_tokens():
    model = _randomise(BERT(**SMALL, task=None))
    x = _inputs(length=6)
    short = _numpy(model(x, training=False))
    rng = np.random.default_rng(5)
    padded = {k: np.concatenate([v, rng.integers(0, 2 if k != "token_ids" else 64, (2, 5))
                                 .astype("int32")], 1) for k, v in x.items()}
    padded["padding_mask"][:, 6:] = 0  # junk ids and segments behind the padding mask
    long = _numpy(model(padded, training=False))
    np.testing.assert_allclose(long["sequence_output"][:, :6], short["sequence_output"],
                               atol=1e-5)
    np.testing.assert_allclose(long["pooled_output"], short["pooled_output"], atol=1e-5)
    # Without the mask the same junk does change the real tokens' outputs.
    padded["padding_mask"][:] = 1
    unmasked = _numpy(model(padded, training=False))
    assert np.abs(unmasked["sequence_output"][:, :6] - short["sequence_output"]).max() > 1e-2


def test_segment_ids_change_their_tokens_embeddings_and_through_attention_everything():
    model = _randomise(BERT(**SMALL, task=None))
    x = _inputs()
    flipped = dict(x, segment_ids=x["segment_ids"].copy())
    flipped["segment_ids"][:, 7] = 0  # one token moves from segment B to A
    embed = keras.Model(model.inputs, model.get_layer("embedding_norm").output)
    a, b = (np.asarray(embed(model._complete_inputs(v))) for v in (x, flipped))
    changed = np.abs(a - b).max(axis=-1)
    assert np.all(changed[:, 7] > 1e-3)
    assert np.all(np.delete(changed, 7, axis=1) == 0)  # only that token's embedding
    out_a, out_b = _numpy(model(x))["sequence_output"], _numpy(model(flipped))["sequence_output"]
    assert np.all(np.abs(out_a - out_b).max(axis=-1) > 1e-4)  # attention spreads it to all
    # Default segment ids are zeros, default padding mask ones.
    defaults = _numpy(model({"token_ids": x["token_ids"]}))["sequence_output"]
    zeros = _numpy(model(dict(x, segment_ids=np.zeros_like(x["segment_ids"]))))
    np.testing.assert_allclose(defaults, zeros["sequence_output"], atol=1e-6)


def test_attention_is_bidirectional():
    model = _randomise(BERT(**SMALL, task=None))
    x = _inputs()
    later = dict(x, token_ids=x["token_ids"].copy())
    later["token_ids"][:, -1] = 5  # the last token changes ...
    a, b = _numpy(model(x))["sequence_output"], _numpy(model(later))["sequence_output"]
    assert np.abs(a[:, 0] - b[:, 0]).max() > 1e-3  # ... and so does the first one's output


@pytest.mark.parametrize("task", sorted(HEADS))
def test_every_head_round_trips_through_presets_and_keras_files(task, tmp_path):
    model = _randomise(BERT(**SMALL, task=task, **HEADS[task]))
    model.tokenizer = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"])
    x = _inputs(task=task)
    before = _numpy(model.predict(x, verbose=0))
    model.save_to_preset(str(tmp_path / "preset"))
    loaded = keras_zoo.from_preset(str(tmp_path / "preset"))
    assert loaded.get_zoo_config() == model.get_zoo_config()
    assert loaded.tokenizer.vocabulary == model.tokenizer.vocabulary
    model.save(tmp_path / "m.keras")
    keras_file = keras.saving.load_model(tmp_path / "m.keras")
    for other in (loaded, keras_file):
        after = _numpy(other.predict(x, verbose=0))
        if isinstance(before, dict):
            assert sorted(after) == sorted(before)
            for k in before:
                np.testing.assert_array_equal(after[k], before[k])
        else:
            np.testing.assert_array_equal(after, before)


def test_head_shapes_and_tied_masked_lm_output():
    shapes = {"pretraining": {"mlm": (2, 4, 64), "nsp": (2, 2)}, "classification": (2, 3),
              "token_classification": (2, 10, 5),
              "question_answering": {"start_logits": (2, 10), "end_logits": (2, 10)}}
    for task, expected in shapes.items():
        out = _numpy(BERT(**SMALL, task=task, **HEADS[task])(_inputs(task=task)))
        got = {k: v.shape for k, v in out.items()} if isinstance(out, dict) else out.shape
        assert got == expected, task
    model = _randomise(BERT(**SMALL, task="pretraining"))
    # The masked-LM logits are transform(h) . E^T + bias with E the input embedding table.
    x = _inputs(task="pretraining")
    sequence = keras.Model(model.inputs, model.get_layer("mlm_transform").output)(
        model._complete_inputs(x))
    table = np.asarray(model.get_layer("token_embedding").embeddings)
    bias = np.asarray(model.get_layer("mlm_output_bias").bias)
    np.testing.assert_allclose(_numpy(model(x))["mlm"], np.asarray(sequence) @ table.T + bias,
                               rtol=1e-4, atol=1e-4)
    assert not any("mlm" in w.path and w.shape == table.shape for w in model.weights)


def test_masked_lm_loss_counts_only_the_chosen_positions():
    model = _randomise(BERT(**SMALL, task="pretraining"))
    loss = model.compile_defaults()["loss"]["mlm"]
    x = _inputs(task="pretraining")
    logits = np.asarray(_numpy(model(x))["mlm"])
    labels = np.array([[7, 9, 11, 0], [8, 10, 0, 0]], "int32")
    weights = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], "float32")
    value = float(loss(labels, logits, sample_weight=weights))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
    assert value == pytest.approx(-(picked * weights).sum() / weights.sum(), rel=1e-5)
    # Whatever sits in the unchosen (weight-0) slots does not count.
    other_labels = np.where(weights > 0, labels, 33)
    other_logits = np.where(weights[..., None] > 0, logits, 50.0)
    assert float(loss(other_labels, other_logits, sample_weight=weights)) == \
        pytest.approx(value, rel=1e-6)
    # Tokens at positions that are not chosen reach the loss only through attention:
    # the logits are gathered at mask_positions, so the model predicts those slots only.
    assert logits.shape[1] == SMALL["max_predictions_per_seq"]


def test_changing_task_keeps_the_encoder_and_starts_a_new_head(tmp_path):
    pretrained = _randomise(BERT(**SMALL, task="pretraining"))
    pretrained.tokenizer = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    pretrained.save_to_preset(str(tmp_path / "p"))
    classifier = BERT.from_preset(str(tmp_path / "p"), task="classification", num_classes=3)
    for name in ("token_embedding", "encoder_block_1", "pooler"):
        for a, b in zip(pretrained.get_layer(name).get_weights(),
                        classifier.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    head = np.asarray(classifier.get_layer("head").kernel)
    assert head.shape == (32, 3) and np.abs(head).max() <= 0.04 + 1e-6  # fresh, N(0, 0.02)
    assert classifier.tokenizer is not None


def test_bad_inputs_are_one_clear_line():
    model = BERT(**SMALL, task=None)
    x = _inputs()
    with pytest.raises(ValueError, match=r"token ids \[64, 99\] are outside the vocabulary "
                                         r"\(0..63\)"):
        model(dict(x, token_ids=np.array([[64] * 10, [99] * 10], "int32")))
    with pytest.raises(ValueError, match=r"token ids \[-1\] are outside"):
        model.predict(dict(x, token_ids=-np.ones((2, 10), "int32")), verbose=0)
    with pytest.raises(ValueError, match=r"segment ids \[2\] are outside the segment table"):
        model(dict(x, segment_ids=np.full((2, 10), 2, "int32")))
    with pytest.raises(ValueError, match="a sequence of 30 tokens is longer than the position "
                                         r"table \(max_sequence_length=24\)"):
        model({"token_ids": np.ones((1, 30), "int32")})
    with pytest.raises(ValueError, match=r"BERT inputs are .*; got \['ids'\]"):
        model({"ids": np.ones((1, 3), "int32")})
    with pytest.raises(TypeError, match="BERT takes a dict"):
        model(np.ones((1, 3), "int32"))
    with pytest.raises(ValueError, match="needs mask_positions"):
        BERT(**SMALL, task="pretraining")(x)
    with pytest.raises(ValueError, match="unknown task 'qa'"):
        BERT(**SMALL, task="qa")
    with pytest.raises(ValueError, match="sequence_length=30 must be in 3..24"):
        BERT(**dict(SMALL, sequence_length=30))
    with pytest.raises(ValueError, match="answer\\(\\) needs task='question_answering'"):
        model.answer("why?", "because.")


def test_data_hooks_pack_pairs_and_label_first_pieces():
    import tensorflow as tf

    from keras_zoo.data import TextInfo

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "cat",
             "dog", "."]
    model = BERT(**dict(SMALL, sequence_length=8), task="classification", num_classes=3)
    model.tokenizer = WordPieceTokenizer(vocab)
    examples = tf.data.Dataset.from_tensor_slices({
        "text": ["unaffable cat cat cat cat cat", "dog"], "text_pair": ["dog dog .", "cat"],
        "label": [2, 0]})
    info = TextInfo("pairs", "test", "classification", 2, num_classes=3)
    (x, y, w), = model.batch_data(examples, info, 4, training=False)
    tokens = [model.tokenizer.decode(r, skip_special_tokens=False).split()
              for r in x["token_ids"].numpy()]
    # 8 positions, 5 for A (8 pieces) + B (3): the longer side is cut first, from its
    # end, until the two are even, then B: un ##aff ##able | dog dog.
    assert tokens[0] == ["[CLS]", "unaffable", "[SEP]", "dog", "dog", "[SEP]"]
    assert x["segment_ids"].numpy()[0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert x["padding_mask"].numpy()[1].tolist() == [1] * 5 + [0] * 3
    assert y.numpy().tolist()[:2] == [2, 0] and w.numpy().tolist() == [1, 1, 0, 0]
    assert x["token_ids"].shape == (4, 8)  # padded to the static batch, weight 0

    tagger = BERT(**dict(SMALL, sequence_length=8), task="token_classification",
                  num_classes=3)
    tagger.tokenizer = model.tokenizer
    words = tf.data.Dataset.from_tensor_slices({"words": [["unaffable", "cat"]] * 2,
                                                "tags": [[1, 2]] * 2})
    (x, y, w), = tagger.batch_data(words, info, 2, training=True)
    # [CLS] un ##aff ##able cat [SEP]: the tag sits on each word's first piece only.
    assert x["token_ids"].numpy()[0].tolist() == [2, 5, 6, 7, 8, 3, 0, 0]
    assert y.numpy()[0].tolist() == [0, 1, 0, 0, 2, 0, 0, 0]
    assert w.numpy()[0].tolist() == [0, 1, 0, 0, 1, 0, 0, 0]


def test_pair_truncation_equals_the_originals_loop():
    import tensorflow as tf

    model = BERT(**dict(SMALL, sequence_length=12), task="classification")
    model.tokenizer = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"])
    rng = np.random.default_rng(0)
    la, lb = rng.integers(1, 15, 200), rng.integers(1, 15, 200)
    first = tf.ragged.constant([[5] * n for n in la])
    second = tf.ragged.constant([[6] * n for n in lb])
    ids = model.pack(first, second)["token_ids"].numpy()
    for row, a, b in zip(ids, la, lb):
        while a + b > 12 - 3:  # run_classifier.py's _truncate_seq_pair
            if a > b:
                a -= 1
            else:
                b -= 1
        assert ((row == 5).sum(), (row == 6).sum()) == (a, b)
