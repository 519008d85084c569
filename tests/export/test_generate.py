"""Generation from a .tflite file alone: Mamba's prefill + step signatures
(export.generate, the host loop GPT's files use too: tests/export/test_gpt_generation.py)."""

import numpy as np
import pytest

import keras_zoo
from export import export_tflite
from export.generate import TFLiteGenerator, choose, next_token_agreement
from export.tflite import ExportError


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = keras_zoo.Mamba.from_preset("mamba_tiny")
    rng = np.random.default_rng(0)
    # Louder than the init, so greedy decoding varies (a random init repeats one token).
    model.set_weights([w + rng.normal(0, 0.2, w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    folder = tmp_path_factory.mktemp("mamba_tflite")
    paths = {q: str(folder / f"{q}.tflite") for q in ("none", "dynamic_int8")}
    results = export_tflite(model, paths)
    return model, paths, results


def keras_greedy(model, prompt, steps):
    logits, state = model.prefill(np.asarray([prompt], "int32"))
    out = []
    for _ in range(steps):
        token = np.asarray(logits).argmax(-1).astype("int32")
        out.append(int(token[0]))
        logits, state = model.step(token, state)
    return out


@pytest.mark.slow
def test_tflite_prefill_and_step_generate_the_same_tokens_as_keras(exported):
    model, paths, results = exported
    for result in results.values():
        ops = result["ops"]
        assert ops["flex"] == [] and ops["custom"] == [] and "WHILE" not in ops["builtin"]
    generator = TFLiteGenerator(paths["none"])
    assert generator.prefill_length == 16 and generator.state_names == ["conv_state",
                                                                        "ssm_state"]
    for prompt in ([5, 17, 200], list(range(30, 46))):  # short (left-padded) and full length
        expected = keras_greedy(model, prompt, 20)
        assert len(set(expected)) > 3
        assert generator.generate([prompt], 20)[0] == expected
    assert next_token_agreement(generator, model, [5, 17, 200], 20) == 1.0
    quantized = TFLiteGenerator(paths["dynamic_int8"])
    print(f"dynamic-int8 next-token agreement: "
          f"{next_token_agreement(quantized, model, [5, 17, 200], 20):.2f}")


@pytest.mark.slow
def test_long_prompts_batches_and_end_tokens(exported):
    model, paths, _ = exported
    generator = TFLiteGenerator(paths["none"])
    # longer than the exported prefill (16): the rest goes through the step signature
    prompt = list(range(30, 51))
    assert generator.generate(prompt, 12) == keras_greedy(model, prompt, 12)
    assert generator.generate([prompt], 12) == [keras_greedy(model, prompt, 12)]
    with pytest.raises(ExportError, match="generates 1 sequence"):
        generator.generate([[1], [2]], 3)
    with pytest.raises(ExportError, match="empty prompt"):
        generator.generate([[]], 3)
    expected = keras_greedy(model, [5, 17, 200], 20)
    end = expected[4]
    assert generator.generate([5, 17, 200], 20, end_id=end) == expected[:expected.index(end) + 1]


def test_choose_is_greedy_at_temperature_zero_and_respects_top_k():
    logits = np.array([[0.0, 3.0, 1.0], [2.0, 0.0, 5.0]])
    np.testing.assert_array_equal(choose(logits), [1, 2])
    rng = np.random.default_rng(0)
    draws = np.stack([choose(logits, 1.0, top_k=1, rng=rng) for _ in range(20)])
    assert (draws == [1, 2]).all()
    draws = np.stack([choose(logits, 5.0, rng=rng) for _ in range(200)])
    assert len(np.unique(draws[:, 0])) == 3  # a high temperature reaches every token
