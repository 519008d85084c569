"""GPT: published sizes, GPT-2's initialisation, the causal mask, and the
key/value cache (generate, prefill/decode graphs) against full recomputation."""

import math

import keras
import numpy as np
import pytest
from keras import ops

import keras_zoo
from keras_zoo.models.gpt import GPT


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(1)
    return GPT.from_preset("gpt_tiny")


def _logits(model, ids):
    return ops.convert_to_numpy(model(np.asarray(ids, "int32")))


@pytest.mark.slow
@pytest.mark.parametrize("name, count", [("gpt2", 124_439_808), ("gpt2_medium", 354_823_168)])
def test_published_parameter_counts(name, count):
    model = keras_zoo.GPT.from_preset(name, load_weights=False)  # the registry config
    assert model.count_params() == count
    # The LM head is the token embedding: one (vocab, width) matrix in the model.
    vocab_sized = [w for w in model.weights if w.shape[0] == 50257]
    assert len(vocab_sized) == 1


def test_gpt2_initialisation():
    """Normal(0, 0.02) kernels, residual projections 0.02 / sqrt(2 N), positions
    0.01, zero biases, unit LayerNorm."""
    keras.utils.set_random_seed(0)
    model = GPT(vocab_size=2000, max_positions=512, sequence_length=16, hidden_dim=256,
                num_layers=8, num_heads=4)
    block = model.get_layer("block_3")
    residual = 0.02 / math.sqrt(2 * 8)
    for weight, std in ((block.attention.qkv.kernel, 0.02), (block.mlp.fc1.kernel, 0.02),
                        (block.attention.out.kernel, residual), (block.mlp.fc2.kernel, residual),
                        (model.get_layer("token_embedding").embeddings, 0.02),
                        (model.get_layer("position_embedding").embeddings, 0.01)):
        values = np.asarray(weight)
        assert abs(values.mean()) < 0.05 * std
        assert values.std() == pytest.approx(std, rel=0.03), weight.path
    np.testing.assert_array_equal(np.asarray(block.attention.qkv.bias), 0)
    np.testing.assert_array_equal(np.asarray(block.attention_norm.gamma), 1)


def test_causal_mask_blocks_the_future(tiny):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 512, (2, 12))
    changed = ids.copy()
    changed[:, 7] = (changed[:, 7] + 1) % 512
    before, after = _logits(tiny, ids), _logits(tiny, changed)
    np.testing.assert_array_equal(before[:, :7], after[:, :7])
    assert np.abs(before[:, 7:] - after[:, 7:]).min() > 0


def test_cached_generation_equals_recomputing_the_prefix(tiny):
    prompts = [[5, 9, 3, 100], [7, 1, 2, 8], [4, 4]]
    got = tiny.generate(prompts, max_new_tokens=10, stop_at_end=False)
    for prompt, tokens in zip(prompts, got):
        ids = list(prompt)
        for _ in range(10):
            ids.append(int(_logits(tiny, [ids])[0, -1].argmax()))
        assert tokens == ids[len(prompt):]
    # step by step: prefill 5 tokens, then one at a time; logits equal the full pass
    ids = np.random.default_rng(1).integers(0, 512, (2, 9)).astype("int32")
    full = _logits(tiny, ids)
    cache = tiny.init_cache(2, 12)
    out, cache = tiny.call_with_cache(ids[:, :5], cache, 0)
    steps = [ops.convert_to_numpy(out)]
    for t in range(5, 9):
        out, cache = tiny.call_with_cache(ids[:, t:t + 1], cache, t)
        steps.append(ops.convert_to_numpy(out))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def test_prefill_and_decode_graphs_equal_the_full_pass(tiny):
    """The export signatures: a right-padded prompt, then one-token steps."""
    prefill, decode = tiny.prefill_model(), tiny.decode_model()
    length = tiny.get_zoo_config()["prefill_length"]
    ids = np.random.default_rng(2).integers(0, 512, (1, 9)).astype("int32")
    full = _logits(tiny, ids)
    padded = np.zeros((1, length), "int32")
    padded[0, :6] = ids[0, :6]
    padded[0, 6:] = 77  # padding must not leak into real positions
    logits, cache = prefill([padded, np.array([6], "int32")])
    np.testing.assert_allclose(ops.convert_to_numpy(logits), full[:, 5], atol=1e-5)
    for t in (6, 7, 8):
        logits, cache = decode([ids[:, t:t + 1], ops.convert_to_numpy(cache),
                                np.array([t], "int32")])
        np.testing.assert_allclose(ops.convert_to_numpy(logits), full[:, t], atol=1e-5)


def test_bad_inputs_fail_in_one_line(tiny):
    with pytest.raises(ValueError, match=r"token ids \[512\] are outside the vocabulary"):
        tiny(np.array([[1, 512]]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tiny.generate([[3, -1]])
    with pytest.raises(ValueError, match="129 tokens passes the model's 128 positions"):
        tiny(np.zeros((1, 129), "int32"))
    with pytest.raises(ValueError, match="passes the model's 128 positions"):
        tiny.generate([[1] * 129], max_new_tokens=1)
    with pytest.raises(ValueError, match="empty prompt"):
        tiny.generate([[]])
    with pytest.raises(ValueError, match=r"prompt of 120 tokens \+ max_new_tokens=9 passes"):
        tiny.generate([[1] * 120], max_new_tokens=9)
    with pytest.raises(ValueError, match="shape \\(batch, length\\)"):
        tiny(np.zeros((2, 3, 4), "int32"))
    with pytest.raises(ValueError, match="sequence_length=300 must be between 1 and "
                                         "max_positions=128"):
        GPT.from_preset("gpt_tiny", sequence_length=300)


def test_preset_round_trip_with_tokenizer(tiny, tmp_path):
    from keras_zoo.data.tokenizers import SentencePieceTokenizer

    text = ["The quick brown fox jumps over the lazy dog. " * 3,
            "Return the number of items in a container."] * 20
    tiny.tokenizer = SentencePieceTokenizer.train(text, vocab_size=300)
    try:
        tiny.save_to_preset(str(tmp_path / "gpt"))
        loaded = keras_zoo.from_preset(str(tmp_path / "gpt"))
        ids = np.array([[1, 2, 3, 4]], "int32")
        np.testing.assert_array_equal(_logits(loaded, ids), _logits(tiny, ids))
        assert loaded.generate("The quick", max_new_tokens=5) == \
            tiny.generate("The quick", max_new_tokens=5)
    finally:
        tiny.tokenizer = None


def test_trains_on_a_repeating_sequence():
    """A few Adam steps on one repeated window drive the loss down (the
    causal LM objective and the tied head learn)."""
    keras.utils.set_random_seed(0)
    model = GPT.from_preset("gpt_tiny", sequence_length=16)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), **model.compile_defaults())
    window = np.tile(np.arange(17, dtype="int32") * 7 % 512, (8, 1))
    history = model.fit(window[:, :-1], window[:, 1:], epochs=30, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < 0.2 * history.history["loss"][0]
