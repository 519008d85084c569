"""Bad inputs to the TFLite host loops and their command lines (issue 22,
section 4): ids outside the vocabulary, sampling knobs out of range, missing /
empty / truncated files, unknown sub-command flags. One tiny Mamba file."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

import keras_zoo
from export import export_tflite
from export.generate import TFLiteGenerator
from export.tflite import ExportError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def tflite_file(tmp_path_factory):
    model = keras_zoo.Mamba(vocab_size=40, hidden_dim=16, num_layers=1, prefill_length=4,
                            sequence_length=16)
    path = str(tmp_path_factory.mktemp("tiny_mamba") / "m.tflite")
    export_tflite(model, {"none": path})
    return path


@pytest.fixture(scope="module")
def generator(tflite_file):
    return TFLiteGenerator(tflite_file)


@pytest.mark.parametrize("prompt, kwargs, match", [
    ([5, -1], {}, r"prompt token ids \[-1\] are outside the vocabulary \(0..39\)"),
    ([5, 40], {}, r"prompt token ids \[40\] are outside the vocabulary"),
    ([5], dict(temperature=-1.0), "temperature must be a finite number >= 0"),
    ([5], dict(temperature=math.nan), "temperature must be a finite number >= 0"),
    ([5], dict(temperature=math.inf), "temperature must be a finite number >= 0"),
    ([5], dict(top_k=0), r"top_k must be in 1..40, got 0"),
    ([5], dict(top_k=-3), r"top_k must be in 1..40, got -3"),
    ([5], dict(top_k=41), r"top_k must be in 1..40, got 41"),
])
def test_generator_refuses_bad_ids_and_sampling(generator, prompt, kwargs, match):
    with pytest.raises(ExportError, match=match):
        generator.generate(prompt, max_new_tokens=2, **kwargs)


def test_generator_still_generates(generator):
    out = generator.generate([5, 6], max_new_tokens=3, top_k=5, seed=0)
    assert len(out) == 3 and all(0 <= t < 40 for t in out)


@pytest.mark.parametrize("content, match", [
    (None, "no .tflite file at"),
    (b"", r"is empty \(0 bytes\)"),
    ("half", r"is not a valid .tflite file \(truncated or corrupt"),
])
def test_missing_empty_or_truncated_files(tflite_file, tmp_path, content, match):
    path = tmp_path / "x.tflite"
    if content == "half":
        data = open(tflite_file, "rb").read()
        path.write_bytes(data[:len(data) // 2])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ExportError, match=match):
        TFLiteGenerator(str(path))


def _cli(module, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("flags, match", [
    (dict(prompt_ids=["5", "-1"]), r"prompt token ids \[-1\] are outside the vocabulary"),
    (dict(temperature=-0.5), r"temperature must be a finite number >= 0 \(0: greedy\), got -0.5"),
    (dict(top_k=-2), "top_k must be in 1..40, got -2"),
])
def test_generate_cli_flags_are_checked(tflite_file, monkeypatch, flags, match):
    # main() as `python -m export.generate --tflite=... --prompt_ids=5,-1` runs it
    # (run_guarded prints the ExportError as one line; a subprocess costs ~1 min here).
    import types

    from export import generate

    values = dict(tflite=tflite_file, tokenizer=None, prompt=None, prompt_ids=["5"],
                  max_new_tokens=2, temperature=None, top_k=None, seed=0, num_threads=1,
                  agreement_with=None)
    monkeypatch.setattr(generate, "_FLAGS", types.SimpleNamespace(**{**values, **flags}))
    with pytest.raises(ExportError, match=match):
        generate.main([])


def test_translate_cli_names_its_flags_for_an_unknown_one():
    result = _cli("export.translate", "--beam=4", "hello")
    assert result.returncode == 2
    assert "export.translate takes --tflite, --tokenizer and --num_threads" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("spec, match", [
    ("gettext_en_de", "'gettext_en_de' is a text set .* input 'token_ids' has shape"),
    ("digits", "'digits' is an image set, but input 'token_ids' has shape"),
])
def test_calibration_data_of_the_wrong_kind_says_which_kind(spec, match):
    from export.export import sample_inputs

    with pytest.raises(ExportError, match=match):
        sample_inputs([("token_ids", (1, 8), "int32")], spec, 4, "train")
