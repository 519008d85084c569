"""LiteRT-LM bundles run by LiteRT-LM's own engine (litert_lm.Engine ->
create_session -> run_prefill / run_decode; the C++ runtime of the Android
and iOS SDKs), no mocks: greedy text equal to Keras' ``generate``."""

import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_zoo
from export import export_model, export_tflite
from export.generate import TFLiteGenerator
from export.litertlm import LiteRTLMGenerator, read_llm_metadata
from export.tflite import ExportError
from keras_zoo.data import text
from keras_zoo.data.tokenizers import BytePairTokenizer, SentencePieceTokenizer

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
GPT2_FIXTURE = os.path.join(ROOT, "tests", "fixtures", "hf_gpt2")
PROMPTS = ["The function returns", "A class", "If the value is not None, the",
           "This module provides a way to read and write the files of an archive, and"]


def _sentences(limit=1500):
    out = []
    for row in text.read_bundled("english_prose", "train")[:120]:
        for s in re.split(r"(?<=[.!?])\s+", row["text"]):
            s = " ".join(s.split())
            if 20 <= len(s) <= 120:
                out.append(s)
    return out[:limit]


@pytest.fixture(scope="module")
def trained_gpt():
    """gpt_tiny trained for a few epochs on sentences of the bundled prose,
    each followed by the end token: greedy continuations differ per prompt
    and some end at the stop token within 32 tokens."""
    keras.utils.set_random_seed(0)
    sentences = _sentences()
    tokenizer = SentencePieceTokenizer.train(sentences, vocab_size=384)
    model = keras_zoo.GPT.from_preset("gpt_tiny", vocab_size=tokenizer.vocab_size)
    model.tokenizer = tokenizer
    stream = np.concatenate([ids + [tokenizer.end_id] for ids in tokenizer.encode(sentences)])
    n = (len(stream) - 1) // 65
    x = np.stack([stream[i * 65:i * 65 + 64] for i in range(n)]).astype("int32")
    y = np.stack([stream[i * 65 + 1:i * 65 + 65] for i in range(n)]).astype("int32")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=model.compile_defaults()["loss"])
    model.fit(x, y, batch_size=32, epochs=4, verbose=0)
    return model


@pytest.fixture(scope="module")
def gpt_bundle(trained_gpt, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("litertlm") / "gpt.litertlm")
    return export_model(trained_gpt, path, format="litertlm")


def test_gpt_bundle_layout(gpt_bundle, trained_gpt):
    assert sorted(gpt_bundle["signatures"]) == ["decode", "prefill_16"]
    inputs = gpt_bundle["signatures"]["decode"]["inputs"]
    assert [i[0] for i in inputs] == ["tokens", "input_pos", "kv_cache_k_0", "kv_cache_v_0",
                                      "kv_cache_k_1", "kv_cache_v_1"]
    assert inputs[2][1] == "(1, 4, 128, 16)"  # (1, heads, context, head_dim)
    assert "DYNAMIC_UPDATE_SLICE" in gpt_bundle["ops"]["builtin"]
    assert gpt_bundle["ops"]["flex"] == [] and gpt_bundle["ops"]["custom"] == []
    meta = read_llm_metadata(gpt_bundle["path"])
    tokenizer = trained_gpt.tokenizer
    assert list(meta.start_token.token_ids.ids) == [tokenizer.start_id]
    assert list(meta.stop_tokens[0].token_ids.ids) == [tokenizer.end_id]
    assert meta.max_num_tokens == 128 and meta.sampler_params.k == 1
    assert meta.HasField("supports_thinking") and meta.HasField("supports_function_calling")
    assert meta.llm_model_type.WhichOneof("model_type") == "generic_model"


def test_engine_greedy_text_equals_keras_generate(gpt_bundle, trained_gpt, tmp_path):
    """4 prompts x 32 tokens, one longer than the 16-token prefill (the engine
    prefills it in chunks). The engine puts the start token before each
    prompt, so Keras generates from [start] + ids."""
    model, tokenizer = trained_gpt, trained_gpt.tokenizer
    engine = LiteRTLMGenerator(gpt_bundle["path"])
    tflite_path = str(tmp_path / "gpt.tflite")
    export_tflite(model, {"none": tflite_path})
    loop = TFLiteGenerator(tflite_path)
    texts, ended = [], 0
    for prompt in PROMPTS:
        ids = engine.prompt_ids(prompt)
        assert ids == [tokenizer.start_id] + tokenizer.encode(prompt)
        expected = model.generate([ids], max_new_tokens=32, sampler="greedy", return_ids=True)[0]
        got = engine.generate(prompt, max_new_tokens=32)
        assert got == tokenizer.decode(expected), prompt
        ended += expected[-1] == tokenizer.end_id
        texts.append(got)
        rate = engine.timings["decode_tokens_per_s"]
        loop.generate(ids, 32, end_id=tokenizer.end_id)
        print(f"{len(ids)}-token prompt, {len(expected)} new: LiteRT-LM "
              f"{1e3 / rate:.2f} ms/token; export.generate loop "
              f"{1e3 * np.median(loop.timings['decode_s']):.2f} ms/token "
              f"(load {os.getloadavg()[0]:.1f})")
    assert len(set(texts)) == len(texts) and all(texts)  # the outputs vary
    assert len(tokenizer.encode(PROMPTS[-1])) + 1 > 16
    assert 1 <= ended < len(PROMPTS)  # some end at the stop token, some run 32 tokens


def test_hf_gpt2_bundle_from_the_command_line_gives_the_reference(tmp_path):
    """hf:<folder> -> .litertlm by the CLI; the engine's greedy text is the
    decoding of transformers' greedy ids (GPT-2 has no start token: the
    engine adds none, as Hugging Face's generate)."""
    reference = dict(np.load(os.path.join(GPT2_FIXTURE, "reference.npz")))
    path = str(tmp_path / "gpt2.litertlm")
    subprocess.run([sys.executable, "-m", "export.export", f"--preset=hf:{GPT2_FIXTURE}",
                    "--format=litertlm", "--prefill_length=8", f"--output={path}"],
                   check=True, capture_output=True, cwd=ROOT)
    engine = LiteRTLMGenerator(path)
    tokenizer = BytePairTokenizer.from_folder(GPT2_FIXTURE)
    assert engine.start_id is None and engine.context_length == 64
    prompt = tokenizer.decode(reference["prompt"][0].tolist())
    assert engine.prompt_ids(prompt) == reference["prompt"][0].tolist()
    greedy = reference["greedy"][0].tolist()
    assert engine.generate(prompt, max_new_tokens=len(greedy)) == tokenizer.decode(greedy)
    with pytest.raises(ExportError, match=r"^prompt of 7\d tokens \(start token included\) "
                       r"\+ max_new_tokens=4 passes the bundle's context of 64 tokens"):
        engine.generate("Hello, world! " * 15, max_new_tokens=4)



def test_quantized_bundles(tmp_path):
    """Smaller files; the engine's greedy text still Keras' (float) for at
    least 3 of 4 prompts of 32 tokens (all 4 on this machine)."""
    model = keras_zoo.GPT.from_preset("hf:" + GPT2_FIXTURE, prefill_length=8)
    sizes = {q: export_model(model, str(tmp_path / f"{q}.litertlm"), format="litertlm",
                             quantization=q, context_length=60)["size_bytes"]
             for q in ("none", "dynamic_int8", "float16")}
    # The engine counts a padded prefill chunk whole against the context:
    # 56 tokens are 7 chunks of 8 (fit in 60), 57 tokens 8 chunks (do not).
    engine = LiteRTLMGenerator(str(tmp_path / "none.litertlm"))
    words = model.tokenizer.encode("one two three four five six seven eight nine ten " * 8)
    long_prompt = model.tokenizer.decode(words[:56])
    assert engine.prompt_ids(long_prompt) == words[:56]
    expected = model.generate([words[:56]], max_new_tokens=4, return_ids=True)[0]
    assert engine.generate(long_prompt, max_new_tokens=4) == model.tokenizer.decode(expected)
    with pytest.raises(ExportError, match=r"^prompt of 57 tokens \(start token included\) "
                       r"takes 8 prefill chunks of 8 positions, past the bundle's context of 60"):
        engine.generate(model.tokenizer.decode(words[:57]), max_new_tokens=3)
    # (the tokenizer and metadata sections keep their size)
    for quantization, ratio in (("dynamic_int8", 0.7), ("float16", 0.8)):
        assert sizes[quantization] < ratio * sizes["none"]
        engine = LiteRTLMGenerator(str(tmp_path / f"{quantization}.litertlm"))
        same = 0
        for prompt in ("Hello", "Hello, world!", "numbers 12345 and 3.14159",
                       "tabs and new lines"):
            ids = engine.prompt_ids(prompt)
            expected = model.generate([ids], max_new_tokens=32, return_ids=True)[0]
            same += engine.generate(prompt, max_new_tokens=32) == model.tokenizer.decode(expected)
        assert same >= 3, quantization

def test_mamba_state_travels_as_kv_cache_tensors(tmp_path):
    """Mamba's conv/SSM states as kv_cache_k/v, one token per prefill call."""
    keras.utils.set_random_seed(1)
    model = keras_zoo.Mamba.from_preset("mamba_tiny", vocab_size=400)
    model.tokenizer = BytePairTokenizer.from_folder(GPT2_FIXTURE)
    result = export_model(model, str(tmp_path / "mamba.litertlm"), format="litertlm")
    assert sorted(result["signatures"]) == ["decode", "prefill_1"]
    assert result["context_length"] == 128  # the inner width: the engine's dimension 2
    engine = LiteRTLMGenerator(result["path"])
    for prompt in ("Hello", "numbers 12345 and 3.14159, 2024-11-27"):
        ids = engine.prompt_ids(prompt)
        expected = model.generate([ids], max_new_tokens=16, return_ids=True)[0]
        assert engine.generate(prompt, max_new_tokens=16) == model.tokenizer.decode(expected)
    with pytest.raises(ExportError, match=r"^--format=litertlm: Mamba prefills one token per "
                       r"LiteRT-LM call"):
        export_model(model, str(tmp_path / "m2.litertlm"), format="litertlm", prefill_length=8)


def test_bad_inputs_are_one_line(tmp_path):
    out = str(tmp_path / "x.litertlm")
    with pytest.raises(ExportError, match=r"^--format=litertlm exports causal language models; "
                       r"LeNet is not one\. Families that export to LiteRT-LM: GPT, Mamba$"):
        export_model(keras_zoo.from_preset("lenet5"), out, format="litertlm")
    model = keras_zoo.GPT.from_preset("gpt_tiny")  # vocab_size 512, no tokenizer
    with pytest.raises(ExportError, match=r"^--format=litertlm needs the model's tokenizer"):
        export_model(model, out, format="litertlm")
    model.tokenizer = BytePairTokenizer.from_folder(GPT2_FIXTURE)  # 400 tokens
    with pytest.raises(ExportError, match=r"^the tokenizer has 400 tokens but the model's "
                       r"vocabulary \(vocab_size\) is 512; LiteRT-LM needs them equal"):
        export_model(model, out, format="litertlm")
    with pytest.raises(ExportError, match=r"^--format=litertlm: need 1 <= prefill length \(16\) "
                       r"<= context length \(200\) <= max_positions \(128\)$"):
        export_model(model, out, format="litertlm", context_length=200)
    with pytest.raises(ExportError, match="apply to --format=litertlm"):
        export_model(model, str(tmp_path / "x.tflite"), prefill_length=8)
    with pytest.raises(ExportError, match=r"^--format=litertlm takes --quantization none / "):
        export_model(model, out, format="litertlm", quantization="int8")
    assert not os.path.exists(out)
