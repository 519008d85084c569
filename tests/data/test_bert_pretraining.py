"""BERT pre-training data: NSP pairs (create_pretraining_data.py) and masked-LM corruption."""

import random

import numpy as np
import pytest
import tensorflow as tf

import keras_zoo
from keras_zoo.data import bert_pretraining as bp
from keras_zoo.data.tokenizers import WordPieceTokenizer

CLS, SEP, PAD, MASK = 2, 3, 0, 4


def _documents(n=300, seed=0):
    """Document d: segments of consecutive ids 1000 d + 10, 1000 d + 11, ... so
    that a token tells its document and its place in it."""
    rng = random.Random(seed)
    docs = []
    for d in range(n):
        next_id, doc = 1000 * (d + 1), []
        for _ in range(rng.randint(1, 30)):
            length = rng.randint(1, 40)
            doc.append(list(range(next_id, next_id + length)))
            next_id += length
        docs.append(doc)
    return docs


def test_nsp_pairs_are_half_real_half_random_and_laid_out_as_the_paper():
    docs = _documents()
    token_ids, segment_ids, lengths, labels = bp.create_instances(
        docs, 64, 0.1, CLS, SEP, PAD, seed=3)
    n = len(labels)
    assert n > 1500
    assert abs(labels.mean() - 0.5) < 3 / np.sqrt(n)  # within 3 standard errors of 50 %
    short = gaps = 0
    for ids, seg, length, label in zip(token_ids, segment_ids, lengths, labels):
        assert 5 <= length <= 64 and np.all(ids[length:] == PAD) and np.all(seg[length:] == 0)
        seps = np.flatnonzero(ids[:length] == SEP)
        assert ids[0] == CLS and len(seps) == 2 and seps[1] == length - 1
        a, b = ids[1:seps[0]], ids[seps[0] + 1:length - 1]
        assert len(a) >= 1 and len(b) >= 1
        assert np.all(seg[:seps[0] + 1] == 0) and np.all(seg[seps[0] + 1:length] == 1)
        same_document = a[0] // 1000 == b[0] // 1000
        if label == bp.IS_NEXT:
            # B follows A in the same document; each side is one consecutive stretch
            # (the trimming of the longer side, at its front or back, may leave a gap).
            assert same_document and b[0] > a[-1]
            assert np.all(np.diff(a) == 1) and np.all(np.diff(b) == 1)
            gaps += b[0] > a[-1] + 1
        else:
            assert not same_document  # B comes from another document
        short += length < 40
    assert short > 0  # short_seq_prob: some sequences aim shorter than the maximum
    assert gaps > 0


def test_truncation_trims_the_longer_side_at_random_ends():
    rng = random.Random(0)
    a, b = list(range(100)), list(range(100, 110))
    bp.truncate_seq_pair(a, b, 30, rng)
    assert len(a) + len(b) == 30 and len(b) == 10 and len(a) == 20
    assert a[0] > 0 and a[-1] < 99  # cut from both ends
    assert np.all(np.diff(a) == 1)


def _mask(token_ids, lengths, seed=0, vocab=1000, p=20):
    out = bp.mask_tokens(tf.constant(token_ids), tf.constant(lengths), tf.constant([seed, 7]),
                         vocab, MASK, [CLS, SEP, PAD], p)
    return {k: v.numpy() for k, v in out.items()}


def test_masking_chooses_15_percent_and_replaces_80_10_10():
    rng = np.random.default_rng(0)
    batch, length = 4000, 64
    lengths = rng.integers(10, length + 1, batch).astype("int32")
    ids = rng.integers(100, 1000, (batch, length)).astype("int32")
    for r, n in enumerate(lengths):
        ids[r, 0], ids[r, n // 2], ids[r, n - 1], ids[r, n:] = CLS, SEP, SEP, PAD
    out = _mask(ids, lengths)
    chosen = out["mask_weights"].sum(1).astype(int)
    # round(len * 0.15) with Python's rounding, at least 1, at most 20
    expected = np.minimum(np.maximum(np.round(lengths * 0.15), 1), 20)
    np.testing.assert_array_equal(chosen, expected)
    real = out["mask_weights"] > 0
    positions = out["mask_positions"]
    rows = np.repeat(np.arange(batch)[:, None], 20, 1)
    assert np.all(positions[real] < lengths[rows[real]])
    originals = ids[rows[real], positions[real]]
    assert not np.isin(originals, [CLS, SEP, PAD]).any()  # never [CLS], [SEP] or padding
    np.testing.assert_array_equal(out["mask_ids"][real], originals)
    for r in range(50):  # increasing, distinct positions
        assert np.all(np.diff(positions[r][real[r]]) > 0)
    new = out["token_ids"][rows[real], positions[real]]
    total = real.sum()
    masked, kept = np.mean(new == MASK), np.mean(new == originals)
    randomised = np.mean((new != MASK) & (new != originals))
    se = np.sqrt(0.1 * 0.9 / total)
    assert total > 20_000
    assert abs(masked - 0.8) < 4 * np.sqrt(0.16 / total)
    assert abs(kept - 0.1) < 4 * se + 1 / 900  # a random token may equal the original
    assert abs(randomised - 0.1) < 4 * se
    # Everything not chosen is untouched.
    untouched = np.ones_like(ids, bool)
    untouched[rows[real], positions[real]] = False
    np.testing.assert_array_equal(out["token_ids"][untouched], ids[untouched])


def test_masking_picks_positions_uniformly_and_depends_only_on_the_seed():
    batch, length = 4000, 12
    ids = np.full((batch, length), 500, "int32")
    ids[:, 0], ids[:, -1] = CLS, SEP
    lengths = np.full(batch, length, "int32")
    out = _mask(ids, lengths, p=2)
    counts = np.bincount(out["mask_positions"][out["mask_weights"] > 0], minlength=length)
    assert counts[0] == 0 and counts[-1] == 0
    inner = counts[1:-1]  # 2 of 10 candidates per row: 800 expected each
    assert np.all(np.abs(inner - 800) < 4 * np.sqrt(800))
    again, other = _mask(ids, lengths, p=2), _mask(ids, lengths, seed=1, p=2)
    np.testing.assert_array_equal(again["token_ids"], out["token_ids"])
    assert np.any(other["mask_positions"] != out["mask_positions"])


def test_pretraining_batches_from_documents(tmp_path):
    model = keras_zoo.BERT.from_preset("bert_tiny_pretraining", vocab_size=600,
                                       sequence_length=48, max_predictions_per_seq=8)
    examples, info = model.load_data("english_prose", "validation")
    texts = [e["text"].decode() for e in examples.take(12).as_numpy_iterator()]
    model.tokenizer = WordPieceTokenizer.train(texts, vocab_size=600)
    batches = list(model.batch_data(examples.take(12), info, 16, training=True))
    assert len(batches) >= 3
    x, y, w = batches[0]
    assert {k: tuple(v.shape) for k, v in x.items()} == {
        "token_ids": (16, 48), "segment_ids": (16, 48), "padding_mask": (16, 48),
        "mask_positions": (16, 8)}
    assert tuple(y["mlm"].shape) == (16, 8) and tuple(y["nsp"].shape) == (16,)
    ids = x["token_ids"].numpy()
    assert np.all(ids[:, 0] == model.tokenizer.cls_id)
    assert np.all((ids == model.tokenizer.mask_id).sum(1) <= 8)
    lengths = x["padding_mask"].numpy().sum(1)
    assert np.all(x["mask_positions"].numpy()[w["mlm"].numpy() > 0]
                  < np.repeat(lengths[:, None], 8, 1)[w["mlm"].numpy() > 0])
    # Evaluation: every instance once, the last batch padded with weight-0 rows.
    evaluation = list(model.batch_data(examples.take(12), info, 16, training=False))
    weights = np.concatenate([b[2]["nsp"].numpy() for b in evaluation])
    assert set(np.unique(weights)) <= {0.0, 1.0} and weights[-1] == 0.0 or weights.all()
    assert all(b[0]["token_ids"].shape == (16, 48) for b in evaluation)
    # The masks of an evaluation pass do not change from one pass to the next.
    again = list(model.batch_data(examples.take(12), info, 16, training=False))
    np.testing.assert_array_equal(evaluation[0][0]["token_ids"], again[0][0]["token_ids"])


@pytest.mark.parametrize("document", [[[5]], [[5, 6]]])
def test_tiny_documents_give_valid_pairs_or_none(document):
    token_ids, _, lengths, _ = bp.create_instances([document, [[9, 10, 11]]], 16, 0.0,
                                                   CLS, SEP, PAD, seed=0)
    for ids, n in zip(token_ids, lengths):
        assert (ids[:n] == SEP).sum() == 2
