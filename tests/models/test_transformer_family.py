"""The 2017 Transformer: what the paper defines, decoding, tokenizer travel, bad input."""

import logging
import math

import keras
import numpy as np
import pytest
from keras import ops

import keras_zoo
from keras_zoo.data import DatasetError
from keras_zoo.data.tokenizers import SentencePieceTokenizer
from keras_zoo.models import decoding
from keras_zoo.models.transformer import LabelSmoothedCrossentropy, Transformer
from keras_zoo.presets import PresetError

SMALL = dict(vocab_size=300, hidden_dim=32, num_encoder_layers=2, num_decoder_layers=2,
             num_heads=2, mlp_dim=64, dropout=0.0, max_source_length=16, max_target_length=16)
PAIRS = [("File not found", "Datei nicht gefunden"), ("Permission denied", "Zugriff verweigert"),
         ("Unknown option", "Unbekannte Option"), ("Save the file", "Datei speichern"),
         ("Open the file", "Datei öffnen"), ("Close the window", "Fenster schließen")] * 20


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    m = Transformer(**SMALL)
    m.tokenizer = SentencePieceTokenizer.train([t for p in PAIRS for t in p], vocab_size=300)
    return m


def _logits(model, src, tgt):
    return ops.convert_to_numpy(model({"source_ids": np.array(src, "int32"),
                                       "target_ids": np.array(tgt, "int32")}))


def test_published_parameter_counts():
    counts = {name: keras_zoo.Transformer.from_preset(name).count_params()
              for name in ("transformer_base", "transformer_big", "transformer_tiny_gettext")}
    # base: embeddings 37,000 x 512 = 18,944,000 (shared by source, target and the
    # pre-softmax projection); encoder 6 x 3,150,336; decoder 6 x 4,199,936: no
    # biases on the attention projections, as tensor2tensor (with them: 63,082,496)
    assert counts == {"transformer_base": 63_045_632, "transformer_big": 214_171_648,
                      "transformer_tiny_gettext": 7_577_600}
    assert keras_zoo.Transformer.from_preset(
        "transformer_base", attention_bias=True).count_params() == 63_082_496
    base = keras_zoo.Transformer.from_preset("transformer_base")
    groups = {"embedding": 0, "encoder": 0, "decoder": 0}
    for layer in base.layers:
        for group in groups:
            if layer.name.startswith(group):
                groups[group] += layer.count_params()
    print("transformer_base parameters:", counts["transformer_base"], groups)
    assert groups == {"embedding": 18_944_000, "encoder": 18_902_016, "decoder": 25_199_616}


def test_projections_are_initialised_per_matrix_as_tensor2tensor():
    # uniform_unit_scaling (gain 1): variance_scaling(1, fan_avg, uniform) on
    # each separate (D, D) q/k/v/output matrix: std D^-0.5 -- glorot over the
    # fused (D, 3D) / (D, 2D) kernels would give 1/sqrt(2) / sqrt(2/3) of it
    keras.utils.set_random_seed(1)
    d = 256
    model = Transformer(**{**SMALL, "hidden_dim": d, "num_heads": 4, "mlp_dim": 512,
                           "attention_bias": False})
    block = model.get_layer("decoder_block_0")
    kernels = {"qkv": block.self_attention.qkv.kernel, "q": block.cross_attention.q.kernel,
               "kv": block.cross_attention.kv.kernel, "out": block.cross_attention.out.kernel}
    for name, kernel in kernels.items():
        w = np.asarray(kernel).reshape(d, -1, d)
        for part in range(w.shape[1]):  # each (D, D) matrix: n = 65,536 draws
            std = w[:, part].std()
            assert abs(std * math.sqrt(d) - 1) < 5 / math.sqrt(2 * d * d) * 1.2, (name, part)
            assert np.abs(w[:, part]).max() <= math.sqrt(3 / d) + 1e-7  # uniform
    assert block.self_attention.qkv.bias is None and block.cross_attention.kv.bias is None
    assert len(block.mlp.trainable_weights) == 4  # the feed-forward keeps its biases


def test_each_sentence_decodes_to_its_own_length_limit_in_any_batch():
    # the output limit is each source's length + 50 (export/translate.py's rule),
    # so a sentence decodes the same alone and next to a much longer one
    keras.utils.set_random_seed(0)
    model = Transformer(**{**SMALL, "max_source_length": 40, "max_target_length": 96})
    rng = np.random.default_rng(0)
    sources = [list(rng.integers(4, 300, n)) + [3] for n in (1, 38)]
    for beam in (1, 2):
        batch = model.translate_ids(sources, beam_size=beam)
        alone = [model.translate_ids([s], beam_size=beam)[0] for s in sources]
        assert batch == alone, beam
        assert all(len(out) <= decoding.target_limit(len(s), 96) for out, s in zip(batch, sources))
    assert decoding.target_limit(2, 96) == 52 and decoding.target_limit(39, 96) == 89
    assert decoding.target_limit(39, 96, max_length=10) == 10
    # the short one runs to its own limit (this untrained model never ends)
    assert len(model.translate_ids(sources[:1] + sources[1:], beam_size=1)[0]) == 52


def test_causal_mask_blocks_the_future(model):
    src = [[5, 6, 7, 3]]
    a = _logits(model, src, [[2, 10, 11, 12, 13]])
    b = _logits(model, src, [[2, 10, 11, 99, 98]])
    np.testing.assert_allclose(a[:, :3], b[:, :3], atol=1e-6)
    assert np.abs(a[:, 3:] - b[:, 3:]).max() > 1e-4


def test_padding_never_changes_real_tokens(model):
    base = _logits(model, [[5, 6, 7, 3]], [[2, 10, 11]])
    padded = _logits(model, [[5, 6, 7, 3, 0, 0, 0]], [[2, 10, 11, 0, 0]])
    np.testing.assert_allclose(padded[:, :3], base, atol=1e-5)
    # ... while a different real source token does change them.
    other = _logits(model, [[5, 6, 8, 3]], [[2, 10, 11]])
    assert np.abs(other - base).max() > 1e-4


def test_cached_decoding_equals_recomputing_the_prefix(model):
    src = np.array([[5, 6, 7, 3, 0], [8, 9, 3, 0, 0]], "int32")
    tgt = np.array([[2, 10, 11, 12], [2, 14, 15, 16]], "int32")
    full = _logits(model, src, tgt)
    _, cross, mask = model.encode(src)
    cache = model.init_cache(2, 6)
    steps = []
    for t in range(4):
        out, cache = model.decode_step(tgt[:, t:t + 1], cache, t, cross, mask)
        steps.append(ops.convert_to_numpy(out))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def test_beam_one_is_greedy_and_greedy_matches_argmax_decoding(model):
    sources = [[5, 6, 7, 3], [8, 9, 10, 11, 12, 3], [20, 3]]
    greedy = model.translate_ids(sources, beam_size=1, max_length=6)
    assert model.translate_ids(sources, beam_size=1, max_length=6) == greedy
    _, cross, mask = model.encode(np.array([s + [0] * (6 - len(s)) for s in sources], "int32"))
    beam, _ = decoding.beam_search(
        lambda t, c, i: model.decode_step(t, c, i, cross, mask), model.init_cache(3, 6),
        [2, 2, 2], 6, 3, beam_size=1, alpha=0.6)
    assert beam == greedy
    # greedy by recomputing the whole prefix every step
    for source, out in zip(sources, greedy):
        prefix = [2]
        for _ in range(6):
            token = int(_logits(model, [source], [prefix])[0, -1].argmax())
            if token == 3:
                break
            prefix.append(token)
        assert out == prefix[1:]


def _scripted_step(table):
    """A decoder whose next-token log-probs depend only on the last token."""
    def step(tokens, cache, index):
        uniform = np.full(5, math.log(0.2))  # rows of beams that can never win
        rows = np.stack([table.get(int(t), uniform) for t in np.asarray(tokens)[:, -1]])
        return rows[:, None, :], cache
    return step


def test_length_penalty_picks_the_hypothesis_the_formula_says():
    # vocab: 0 pad, 1 "a", 2 start, 3 end, 4 "b". From start: end at once (p .5) or
    # "a" (p .5); after "a": "b" (p .95); after "b": end (p .95).
    def logp(*p):
        return np.log(np.array(p) + 1e-12)

    table = {2: logp(0, .5, 0, .5, 0), 1: logp(0, 0, 0, .05, .95), 4: logp(0, 0, 0, .95, .05)}
    short = math.log(.5)                      # []         1 token with </s>
    long = math.log(.5 * .95 * .95)           # [a, b]     3 tokens with </s>
    for alpha in (0.0, 0.6, 2.0):
        lp = decoding.length_penalty
        expected = [] if short / lp(1, alpha) > long / lp(3, alpha) else [1, 4]
        best, scores = decoding.beam_search(_scripted_step(table), np.zeros((2, 1)), [2], 8, 3,
                                            beam_size=2, alpha=alpha)
        assert best == [expected], alpha
        assert scores[0] == pytest.approx(max(short / lp(1, alpha), long / lp(3, alpha)))
    # alpha = 0 prefers the short one here, alpha = 0.6 (the paper's) the long one.
    assert decoding.beam_search(_scripted_step(table), np.zeros((2, 1)), [2], 8, 3, 2,
                                alpha=0.0)[0] == [[]]
    assert decoding.beam_search(_scripted_step(table), np.zeros((2, 1)), [2], 8, 3, 2,
                                alpha=0.6)[0] == [[1, 4]]


def test_inverse_sqrt_schedule_is_the_papers_formula():
    from keras_zoo.training.schedules import InverseSqrtSchedule

    d_model, warmup = 512, 4000
    schedule = InverseSqrtSchedule(InverseSqrtSchedule.paper_peak(d_model, warmup), warmup)
    for step in (1, 100, 3999, 4000, 4001, 10_000, 100_000):
        formula = d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)
        assert float(schedule(step - 1)) == pytest.approx(formula, rel=1e-5)


def test_label_smoothing_matches_the_smoothed_distribution():
    logits = np.random.default_rng(0).normal(size=(2, 3, 7)).astype("float32")
    labels = np.array([[1, 2, 0], [4, 5, 6]])
    weights = np.array([[1, 1, 0], [1, 1, 1]], "float32")
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    target = np.full((2, 3, 7), 0.1 / 6)
    np.put_along_axis(target, labels[..., None], 0.9, axis=-1)
    expected = (-(target * logp).sum(-1) * weights).sum() / weights.sum()
    loss = LabelSmoothedCrossentropy(0.1)(labels, logits, sample_weight=weights)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_batches_are_static_buckets_and_weight_only_real_tokens(model):
    import tensorflow as tf

    from keras_zoo.data import TextInfo

    examples = tf.data.Dataset.from_tensor_slices(
        {"source": [s for s, _ in PAIRS], "target": [t for _, t in PAIRS]})
    info = TextInfo("pairs", "train", "translation", len(PAIRS))
    model.prepare_data(examples, info)
    batches = list(model.batch_data(examples, info, 4, training=True))
    assert len(batches) == model.steps_per_pass(info, 4)
    for x, y, w in batches:
        rows, width = y.shape
        assert width in (8, 12, 16) and rows == {8: 8, 12: 4, 16: 4}[width]
        assert x["source_ids"].shape == x["target_ids"].shape == (rows, width)
        y, w, target_in = (ops.convert_to_numpy(t) for t in (y, w, x["target_ids"]))
        np.testing.assert_array_equal(w, (y != 0).astype("float32"))
        assert (target_in[:, 0] == 2).all()  # decoder input starts with <s>
        np.testing.assert_array_equal(target_in[:, 1:][w[:, 1:] > 0], y[:, :-1][w[:, 1:] > 0])
    evaluation = model.batch_data(examples, info, 4, training=False)
    # bucketing hides the length from tf.data; evaluation passes carry it
    # (Keras' evaluate() misreports metrics on a dataset of unknown length)
    assert int(evaluation.cardinality()) == len(list(evaluation))
    evaluation = list(evaluation)
    assert sum(float(ops.sum(w)) > 0 and int(ops.sum(ops.max(w, axis=1))) for _, _, w in
               evaluation) == len(PAIRS)


def test_translation_travels_with_its_tokenizer(model, tmp_path):
    model.save_to_preset(tmp_path / "preset")
    loaded = keras_zoo.from_preset(str(tmp_path / "preset"))
    texts = ["File not found", "Datei öffnen 日本", ""]
    assert loaded.translate(texts, beam_size=2, max_length=5) == \
        model.translate(texts, beam_size=2, max_length=5)
    assert model.translate([""])[0] == ""
    (tmp_path / "preset" / "tokenizer.spm").unlink()
    with pytest.raises(PresetError, match="tokenizer.spm"):
        keras_zoo.from_preset(str(tmp_path / "preset"))


def test_bad_input_gets_one_clear_line(model, caplog):
    with caplog.at_level(logging.WARNING, logger="keras_zoo"):
        model.translate(["file " * 40], beam_size=1, max_length=3)
    assert "cut to fit max_source_length=16" in caplog.text
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.translate_ids([[5, 400, 3]])
    with pytest.raises(ValueError, match="no tokenizer"):
        Transformer(**SMALL).translate(["hello"])
    with pytest.raises(DatasetError, match="trains on a translation dataset"):
        model.load_data("english_prose")
    with pytest.raises(DatasetError, match="not a text set"):
        model.load_data("tfds:mnist")
    with pytest.raises(ValueError, match="hidden_dim=30 is not divisible by num_heads=4"):
        Transformer(hidden_dim=30, num_heads=4)
    with pytest.raises(ValueError, match="num_encoder_layers must be a positive integer"):
        Transformer(num_encoder_layers=0)
