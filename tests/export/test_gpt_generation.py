"""GPT on device: the prefill/decode TFLite signatures and export.generate's
host loop give the Keras model's greedy tokens, from the .tflite file alone."""

import subprocess
import sys

import keras
import pytest

import keras_zoo
from export import export_tflite
from export.generate import TFLiteGenerator
from export.tflite import ExportError

PROMPTS = [[5, 9, 3], [7] * 20, list(range(40, 62)), [311]]  # the third passes prefill_length


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(3)
    model = keras_zoo.GPT.from_preset("gpt_tiny")
    folder = tmp_path_factory.mktemp("gpt_tflite")
    paths = {"none": str(folder / "f32.tflite"), "dynamic_int8": str(folder / "int8.tflite")}
    results = export_tflite(model, paths)
    return model, paths, results


def test_signatures_are_builtin_ops_with_an_explicit_cache(exported):
    _, paths, results = exported
    for result in results.values():
        assert result["ops"]["flex"] == [] and result["ops"]["custom"] == []
        assert sorted(result["signatures"]) == ["decode", "prefill"]
        assert result["signatures"]["decode"]["outputs"] == ["logits", "next_cache"]
    assert results["dynamic_int8"]["size_bytes"] < 0.7 * results["none"]["size_bytes"]
    generator = TFLiteGenerator(paths["none"])
    assert generator.prefill_length == 16 and generator.max_length == 128
    assert tuple(generator.decode_inputs["cache"]["shape"]) == (1, 2, 2, 4, 128, 16)


@pytest.mark.parametrize("quantization", ["none", "dynamic_int8"])
def test_tflite_greedy_tokens_equal_keras(exported, quantization):
    model, paths, _ = exported
    expected = model.generate(PROMPTS, max_new_tokens=32, stop_at_end=False)
    generator = TFLiteGenerator(paths[quantization])
    assert [generator.generate(p, 32) for p in PROMPTS] == expected
    assert len(generator.timings["decode_s"]) == 31


def test_host_loop_errors_and_sampling(exported, tmp_path):
    _, paths, _ = exported
    generator = TFLiteGenerator(paths["none"])
    with pytest.raises(ExportError, match="passes the exported cache of 128 positions"):
        generator.generate([1] * 100, max_new_tokens=29)
    with pytest.raises(ExportError, match="empty prompt"):
        generator.generate([], 4)
    a = generator.generate([5, 9], 8, top_k=20, seed=1)
    assert a == generator.generate([5, 9], 8, top_k=20, seed=1) and len(a) == 8
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((1, 4), tf.float32)])
    def classify(x):
        return {"logits": 2.0 * x}
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [classify.get_concrete_function()], classify)
    (tmp_path / "other.tflite").write_bytes(converter.convert())
    with pytest.raises(ExportError, match="generation needs 'prefill' and one of"):
        TFLiteGenerator(str(tmp_path / "other.tflite"))


def test_command_line(exported, capsys):
    import types

    from export import generate

    _, paths, _ = exported
    run = subprocess.run(
        [sys.executable, "-m", "export.generate", f"--model={paths['none']}",
         "--prompt_ids=5,9,3", "--max_new_tokens=6"], capture_output=True, text=True, check=True)
    tokens = [int(t) for t in run.stdout.split()]
    assert tokens == TFLiteGenerator(paths["none"]).generate([5, 9, 3], 6)
    assert "ms/token" in run.stderr
    flags = {"tflite": paths["none"], "tokenizer": None, "prompt": ["Hello"], "prompt_ids": None,
             "max_new_tokens": 4, "top_k": None, "temperature": None, "seed": None,
             "num_threads": 1, "agreement_with": None}
    generate._FLAGS = types.SimpleNamespace(**flags)
    with pytest.raises(ExportError, match="--prompt needs --tokenizer"):
        generate.main([])
    generate._FLAGS = types.SimpleNamespace(**{**flags, "prompt": None, "prompt_ids": ["7"]})
    generate.main([])
    assert len(capsys.readouterr().out.split()) == 4
    generate._FLAGS = types.SimpleNamespace(**{**flags, "prompt": None, "prompt_ids": ["7", "x"]})
    with pytest.raises(ExportError, match="--prompt_ids takes whole numbers, got '7,x'"):
        generate.main([])
