"""Tests for five bugs a planted-bug audit slipped past the suite.

Each test names the bug it catches; the issue's closing note shows each one
failing with the bug planted. Decoding is checked on a fake step function
whose next-token distribution depends on the whole prefix and puts weight on
the end token, so hypotheses vary and finish (a fixture that decodes one
constant sequence and never ends cannot tell a right search from a wrong one).
"""

import itertools
import math

import numpy as np
import pytest

from keras_zoo.models import decoding

VOCAB, START, END = 4, 2, 3


def _logp(prefix):
    """Seeded log-probabilities of the next token after ``prefix`` (a tuple)."""
    logits = np.random.default_rng([7, len(prefix), *prefix]).normal(0.0, 1.5, VOCAB)
    return logits - np.log(np.exp(logits).sum())


def _history_step(seen):
    """A decoder step whose cache is each row's token history; records every
    prefix it is asked to extend in ``seen``."""
    def step(tokens, cache, index):
        cache = np.array(cache, np.int32)
        cache[:, index] = np.asarray(tokens)[:, -1]
        rows = []
        for history in cache[:, :index + 1]:
            prefix = tuple(int(t) for t in history[1:])  # without the start token
            seen.append(prefix)
            rows.append(_logp(prefix))
        return np.stack(rows)[:, None, :], cache
    return step


def _reorder(cache, rows):
    return np.asarray(cache)[np.asarray(rows)]


def _exhaustive_best(max_length, alpha):
    """The best finished hypothesis by enumeration: sequences of non-end
    tokens followed by the end token, scored log p / lp(length with end)."""
    best = (-np.inf, None)
    for n in range(max_length):
        for body in itertools.product([t for t in range(VOCAB) if t != END], repeat=n):
            logp = sum(_logp(body[:i])[t] for i, t in enumerate(body)) + _logp(body)[END]
            best = max(best, (logp / decoding.length_penalty(n + 1, alpha), list(body)))
    return best


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_search_never_extends_a_finished_hypothesis(alpha):
    # Bug (a): ended candidates kept among the alive beams get extended past
    # the end token. With as many beams as sequences the search is exhaustive
    # and must return the enumerated optimum with its exact score.
    max_length, beams = 4, (VOCAB - 1) ** 4
    seen = []
    cache = np.zeros((beams, max_length + 1), np.int32)
    best, scores = decoding.beam_search(_history_step(seen), cache, [START], max_length, END,
                                        beam_size=beams, alpha=alpha, reorder=_reorder)
    expected_score, expected = _exhaustive_best(max_length, alpha)
    assert best == [expected]
    assert scores[0] == pytest.approx(expected_score, rel=1e-9)
    assert len(set(map(tuple, seen))) > 20  # the hypotheses did vary


def test_small_beam_scores_are_the_returned_sequences_scores():
    # With 2 beams over 4 tokens (one of them the end), at least 2 of the 4
    # candidates kept each step did not end, so every row the step extends is
    # a live hypothesis: none may contain the end token.
    seen = []
    best, scores = decoding.beam_search(_history_step(seen), np.zeros((6, 9), np.int32),
                                        [START, START, START], 8, END, beam_size=2, alpha=0.6,
                                        reorder=_reorder)
    for seq, score in zip(best, scores):
        logp = sum(_logp(tuple(seq[:i]))[t] for i, t in enumerate(seq)) + _logp(tuple(seq))[END]
        assert score == pytest.approx(logp / decoding.length_penalty(len(seq) + 1, 0.6))
    assert [p for p in seen if END in p] == []


def test_transformer_scales_embeddings_by_sqrt_d_model():
    # Bug (b): Vaswani et al. 2017, 3.4: "we multiply those weights by sqrt(d_model)".
    import keras_zoo

    model = keras_zoo.Transformer(vocab_size=40, hidden_dim=16, num_encoder_layers=1,
                                  num_decoder_layers=1, num_heads=2, mlp_dim=32)
    embedding = model._parts["embedding"]
    ids = np.array([[5, 9, 1]], "int32")
    table = np.asarray(embedding.embeddings)
    np.testing.assert_allclose(np.asarray(embedding(ids)), table[ids] * math.sqrt(16),
                               rtol=1e-6)
    # ... and the encoder sees scaled embeddings plus the sinusoid.
    positions = model._parts["positions"]
    np.testing.assert_allclose(np.asarray(positions(embedding(ids))),
                               table[ids] * 4.0 + np.asarray(positions(np.zeros((1, 3, 16),
                                                                                "float32"))),
                               rtol=1e-6, atol=1e-6)


def test_bert_layer_norm_epsilon_is_the_official_1e_12():
    # Bug (c): google-research/bert's layer_norm (tf.contrib.layers.layer_norm)
    # uses variance epsilon 1e-12, as Hugging Face's layer_norm_eps.
    import keras_zoo
    from keras_zoo.layers.normalization import LayerNormalization
    from keras_zoo.models.bert import MaskedLMTransform

    model = keras_zoo.BERT.from_preset("bert_tiny_pretraining")
    norms = [layer for layer in _all_layers(model) if isinstance(layer, LayerNormalization)]
    assert len(norms) >= 2 * model.get_zoo_config()["num_layers"] + 2
    assert {n.epsilon for n in norms} == {1e-12}
    assert MaskedLMTransform().layer_norm_epsilon == 1e-12
    # Functionally: a row of variance 1e-8 normalises to unit variance (eps
    # 1e-5 would shrink it a thousandfold).
    norm = norms[0]
    x = np.random.default_rng(0).normal(0, 1e-4, (2, norm.gamma.shape[0])).astype("float32")
    out = (np.asarray(norm(x)) - np.asarray(norm.beta)) / np.asarray(norm.gamma)
    np.testing.assert_allclose(out.std(-1), 1.0, rtol=1e-3)


def _all_layers(layer):
    out = []
    for sub in getattr(layer, "_flatten_layers", lambda **k: [])(include_self=False,
                                                                 recursive=True):
        out.append(sub)
    return out


def test_qat_weight_grid_is_255_narrow_range_levels():
    # Bug (d): int8 weights are symmetric with 255 levels (-127..127, scale
    # m / 127, no -128), as the TFLite converter quantizes float weights.
    from keras_zoo.quantization.state import quantize_kernel

    kernel = np.random.default_rng(0).normal(0, 1, (64, 3)).astype("float32")
    for per_channel in (True, False):
        q = np.asarray(quantize_kernel(kernel, per_channel))
        m = np.abs(kernel).max(axis=0) if per_channel else np.abs(kernel).max()
        levels = q / (m / 127.0)
        np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
        assert levels.min() >= -127.001 and levels.max() <= 127.001
        np.testing.assert_allclose(np.abs(q).max(axis=0 if per_channel else None), m,
                                   rtol=1e-6)  # +-m is on the grid


def test_bleu_callback_scores_hypotheses_against_references():
    # Bug (e): BleuLog passing references and hypotheses the wrong way round.
    # A hypothesis that is the first 6 of the reference's 7 tokens has every
    # n-gram precision 1 and brevity penalty exp(1 - 7/6); swapped, the
    # penalty is 1 and the precisions are 6/7, 5/6, 4/5, 3/4.
    import tensorflow as tf

    from keras_zoo.models.transformer import BleuLog

    reference, hypothesis = "the cat sat on the red mat", "the cat sat on the red"

    class Fake:
        tokenizer = object()

        def translate(self, texts, beam_size=4):
            return [hypothesis for _ in texts]

    examples = tf.data.Dataset.from_tensor_slices({"source": [b"die Katze"],
                                                   "target": [reference.encode()]})
    logs = {}
    BleuLog(Fake(), examples).on_epoch_end(0, logs)
    assert logs["val_bleu"] == pytest.approx(100 * math.exp(1 - 7 / 6), abs=1e-3)
    assert logs["val_bleu"] != pytest.approx(100 * (3 / 7) ** 0.25, abs=1e-2)
