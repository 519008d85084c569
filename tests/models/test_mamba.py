"""Mamba LM: published sizes, recurrent state == recomputation, clear errors."""

import keras
import numpy as np
import pytest

import keras_zoo
from keras_zoo.models.mamba import Mamba
from tests.float32_tolerance import float32_atol


def _atol(model, reference, length):
    """float32 rounding bound (tests/float32_tolerance.py) for recomputing
    logits of ``length`` tokens another way (padded prefill, chunks, steps):
    per block the in-projection (D), depthwise conv (kernel), x/dt projections
    (inner, dt_rank), the scan (length, state), out-projection (inner) and
    the RMSNorm (D); then the final norm and the tied head (D)."""
    c = model.get_zoo_config()
    d, inner = c["hidden_dim"], c["expand"] * c["hidden_dim"]
    dt_rank = c["dt_rank"] or -(-d // 16)
    block = [d, c["conv_kernel"], inner, dt_rank, length, c["state_dim"], inner, d]
    return float32_atol(reference, block * c["num_layers"] + [d, d])


def _tiny(**overrides):
    model = keras_zoo.Mamba.from_preset("mamba_tiny", **overrides)
    rng = np.random.default_rng(0)
    # Louder weights than the init, so greedy decoding does not just repeat a token.
    model.set_weights([w + rng.normal(0, 0.2, w.shape).astype(w.dtype) for w in model.get_weights()])
    return model


def greedy_by_recomputing(model, prompt, steps):
    tokens = np.asarray(prompt)
    for _ in range(steps):
        logits = np.asarray(model(tokens))[:, -1]
        tokens = np.concatenate([tokens, logits.argmax(-1)[:, None].astype("int32")], axis=1)
    return tokens[:, np.asarray(prompt).shape[1]:]


@pytest.mark.slow
def test_generate_with_the_recurrent_state_equals_recomputing_the_prefix():
    model = _tiny()
    prompts = [[5, 9, 300, 41], [7, 1, 2, 8], [4, 4, 9, 9]]
    got = model.generate(prompts, max_new_tokens=10, stop_at_end=False)
    assert got == [greedy_by_recomputing(model, np.array([p], "int32"), 10)[0].tolist()
                   for p in prompts]
    assert len(set(got[0])) > 3  # a varied continuation, not one repeated token


def test_call_with_cache_continues_a_prompt_in_chunks():
    model = _tiny()
    tokens = np.random.default_rng(7).integers(0, 512, (2, 23)).astype("int32")
    full = np.asarray(model(tokens))
    logits, cache = model.call_with_cache(tokens[:, :10], model.init_cache(2, 23), 0)
    more, cache = model.call_with_cache(tokens[:, 10:22], cache, 10)  # parallel, from a state
    last, _ = model.call_with_cache(tokens[:, 22:], cache, 22)  # one recurrent step
    np.testing.assert_allclose(np.concatenate([logits, more, last], axis=1), full,
                               atol=_atol(model, full, 23))


def greedy_by_state(model, prompt, steps, padding_mask=None):
    logits, state = model.prefill(prompt, padding_mask)
    out = []
    for _ in range(steps):
        token = np.asarray(logits).argmax(-1).astype("int32")
        out.append(token)
        logits, state = model.step(token, state)
    return np.stack(out, axis=1)


@pytest.mark.slow
@pytest.mark.parametrize("name, count", [("mamba_130m", 129_135_360), ("mamba_370m", 371_516_416)])
def test_published_parameter_counts(name, count):
    model = keras_zoo.from_preset(name, load_weights=False)  # the registry config
    assert model.count_params() == count
    assert model.padded_vocab_size == 50280  # already a multiple of 8


def test_vocabulary_is_padded_to_a_multiple_of_8_and_generation_skips_the_padding():
    model = Mamba(vocab_size=50277, hidden_dim=16, num_layers=1)
    assert model.padded_vocab_size == 50280
    assert model.output.shape == (None, None, 50280)
    logits, _ = model.prefill(np.zeros((1, 3), "int32"))
    assert logits.shape == (1, 50277)


def test_generation_with_recurrent_state_equals_recomputing_the_prefix():
    model = _tiny()
    prompt = np.random.default_rng(1).integers(0, 512, (2, 7)).astype("int32")
    by_state = greedy_by_state(model, prompt, 12)
    assert len(np.unique(by_state)) > 3  # a varied continuation, not one repeated token
    np.testing.assert_array_equal(by_state, greedy_by_recomputing(model, prompt, 12))


def test_prefill_and_steps_reproduce_full_sequence_logits():
    model = _tiny()
    tokens = np.random.default_rng(2).integers(0, 512, (2, 20)).astype("int32")
    full = np.asarray(model(tokens))
    logits, state = model.prefill(tokens[:, :9])
    np.testing.assert_allclose(logits, full[:, 8], atol=_atol(model, full, 20))
    for t in range(9, 20):
        logits, state = model.step(tokens[:, t], state)
        np.testing.assert_allclose(logits, full[:, t], atol=_atol(model, full, 20))
    state = model.init_cache(2)  # stepping from zero == reading from the start
    for t in range(20):
        logits, state = model.step(tokens[:, t], state)
    np.testing.assert_allclose(logits, full[:, 19], atol=_atol(model, full, 20))


def test_left_padded_prompts_generate_like_unpadded_ones():
    model = _tiny()
    rng = np.random.default_rng(3)
    short = rng.integers(0, 512, (1, 5)).astype("int32")
    padded = np.concatenate([rng.integers(0, 512, (1, 4)).astype("int32"), short], axis=1)
    mask = np.array([[0] * 4 + [1] * 5], "int32")
    np.testing.assert_array_equal(greedy_by_state(model, padded, 6, mask),
                                  greedy_by_state(model, short, 6))


def test_state_has_constant_size():
    model = _tiny()
    conv, ssm = model.init_cache(3)
    assert tuple(conv.shape) == (3, 2, 3, 128) and tuple(ssm.shape) == (3, 2, 128, 16)
    _, (conv_after, ssm_after) = model.prefill(np.zeros((3, 40), "int32"))
    assert conv_after.shape == conv.shape and ssm_after.shape == ssm.shape


def test_step_rejects_a_state_of_the_wrong_shape_or_batch():
    model = _tiny()
    conv, ssm = model.init_cache(2)
    with pytest.raises(ValueError, match=r"conv_state has shape \(3, 2, 3, 128\).*expects "
                                         r"\(2, 2, 3, 128\)"):
        model.step(np.zeros(2, "int32"), model.init_cache(3))  # batch 3 state, 2 tokens
    with pytest.raises(ValueError, match=r"ssm_state has shape \(2, 2, 128, 8\)"):
        model.step(np.zeros(2, "int32"), (conv, np.zeros((2, 2, 128, 8), "float32")))
    with pytest.raises(ValueError, match="pair"):
        model.step(np.zeros(2, "int32"), conv)
    with pytest.raises(ValueError, match="one token per sequence"):
        model.step(np.zeros((2, 3), "int32"), (conv, ssm))


def test_width_not_divisible_as_the_config_requires_is_a_clear_error():
    with pytest.raises(ValueError, match=r"expand=1.5 x width 77 = 115.5 is not a whole number"):
        Mamba(vocab_size=64, hidden_dim=77, num_layers=1, expand=1.5)


def test_a_log_and_d_take_no_weight_decay():
    model = _tiny()
    names = {v.path for v in model.no_weight_decay_variables()}
    assert "block_0/mixer/scan/A_log" in names and "block_1/mixer/scan/D" in names
    assert "block_0/mixer/dt_proj/bias" in names and "final_norm/scale" in names
    assert not any(n.endswith(("in_proj/kernel", "embeddings", "conv1d_kernel")) for n in names)
    assert len(names) == 1 + 2 * 5  # final norm; per block: norm, conv b, dt b, A_log, D


def test_keras_file_and_preset_round_trip(tmp_path):
    from keras_zoo.data.tokenizers import SentencePieceTokenizer

    tokenizer = SentencePieceTokenizer.train(
        ["the state space model reads a token", "and keeps a state of fixed size"] * 40,
        vocab_size=300)
    model = _tiny(vocab_size=tokenizer.vocab_size)
    model.tokenizer = tokenizer
    tokens = np.arange(24, dtype="int32").reshape(2, 12)
    before = np.asarray(model(tokens))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(np.asarray(loaded(tokens)), before)
    model.save_to_preset(str(tmp_path / "preset"))
    again = keras_zoo.from_preset(str(tmp_path / "preset"))
    np.testing.assert_array_equal(np.asarray(again(tokens)), before)
    logits, _ = again.prefill(tokens)
    vocab = tokenizer.vocab_size
    np.testing.assert_allclose(logits, before[:, -1, :vocab], atol=_atol(again, before, 16))
    assert again.generate("the state", max_new_tokens=3).startswith("the state")


def test_logits_are_float32_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = Mamba(vocab_size=64, hidden_dim=32, num_layers=1)
        logits = model(np.zeros((1, 5), "int32"))
        _, (conv, ssm) = model.prefill(np.zeros((1, 5), "int32"))
        _, (_, ssm) = model.step(np.zeros(1, "int32"), (conv, ssm))
    finally:
        keras.config.set_dtype_policy("float32")
    assert logits.dtype == "float32" and ssm.dtype == "float32"
    assert model.get_layer("block_0").mixer.scan.A_log.dtype == "float32"


def test_mixed_precision_keeps_the_residual_and_the_dt_bias_in_float32():
    # mamba_ssm: residual_in_fp32 (its released configs, HF's MambaConfig) and
    # selective_scan_fn(delta_bias=dt_proj.bias.float())
    config = dict(vocab_size=64, hidden_dim=32, num_layers=3, sequence_length=16)
    keras.utils.set_random_seed(0)
    reference = Mamba(**config)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = Mamba(**config)
        model.set_weights(reference.get_weights())
        block = model.get_layer("block_1")
        x = model.get_layer("embedding")(np.zeros((1, 8), "int32"))
        assert x.dtype == "bfloat16" and block(x).dtype == "float32"
        assert block(x, return_state=True)[0].dtype == "float32"
        mixer = block.mixer
        mixer.dt_proj.kernel.assign(np.zeros(mixer.dt_proj.kernel.shape, "float32"))
        dt, _, _ = mixer._ssm_inputs(keras.ops.ones((1, 2, mixer.inner_dim), "bfloat16"),
                                     mixer.x_proj, mixer.dt_proj)
        bias = np.asarray(mixer.dt_proj.bias)
        # the bias added in float32: not rounded to bfloat16's 8 significant bits
        assert dt.dtype == "float32" and np.array_equal(np.asarray(dt)[0, 0], bias)
        tokens = np.random.default_rng(0).integers(0, 64, (2, 16)).astype("int32")
        mixer.dt_proj.kernel.assign(reference.get_layer("block_1").mixer.dt_proj.kernel)
        mixed = np.asarray(model(tokens))
    finally:
        keras.config.set_dtype_policy("float32")
    full = np.asarray(reference(tokens))
    # bfloat16 keeps 8 significant bits (relative 2^-8 = 0.4 %): 3 blocks of
    # rounded matmuls stay within a few of those of the logits' scale
    assert np.abs(mixed - full).max() < 8 * 2.0 ** -8 * np.abs(full).max()


def test_serving_signatures_are_prefill_and_step():
    model = _tiny()
    signatures = model.serving_signatures()
    assert sorted(signatures) == ["prefill", "step"]
    prefill, step = signatures["prefill"], signatures["step"]
    assert [tuple(t.shape) for t in prefill.inputs] == [(None, 16), (None, 16)]
    assert prefill.output_names == ["logits", "conv_state", "ssm_state"]
    assert [t.name for t in step.inputs] == ["token_id", "conv_state", "ssm_state"]
    assert step.output_names == ["logits", "next_conv_state", "next_ssm_state"]
