"""A causal language model as a ``.litertlm`` bundle for LiteRT-LM, the
on-device LLM runtime of Android, iOS and desktop apps
(google-ai-edge/LiteRT-LM; built with ``litert-lm-builder``).

    python -m export.export --preset=hf:gpt2 --format=litertlm --output=gpt2.litertlm

The bundle holds three sections:

* one TFLite model (``PREFILL_DECODE``) whose signatures follow what the
  engine's executor reads (runtime/executor/litert_compiled_model_executor_utils.cc):
  a ``prefill_<P>`` signature and a ``decode`` one, inputs ``tokens``,
  ``input_pos`` and per-layer caches ``kv_cache_k_<i>`` / ``kv_cache_v_<i>``
  of (1, heads, context, head_dim); prefill returns the caches, decode
  ``logits`` (1, 1, vocab) and the caches. The family writes them
  (``model.litertlm_signatures``); this module only converts and packs.
* the tokenizer, as the engine reads it: a Hugging Face ``tokenizer.json``
  for byte-level BPE (GPT-2), the SentencePiece model for SentencePiece; its
  vocabulary must have exactly the model's ``vocab_size`` entries.
* ``LlmMetadata``: start token (the engine puts it before every prompt; none
  when the tokenizer has no start token, as GPT-2's), stop token (the
  tokenizer's end token), greedy sampler defaults, ``max_num_tokens`` = the
  context, ``generic_model``, no thinking, no function calling.

GPT and Mamba have such signatures (Mamba's recurrent state travels as
``kv_cache_*`` tensors, one token per prefill call: keras_zoo/models/mamba.py
says why); any other family is refused in one line.
"""

import math
import os
import re
import shutil

from export.tflite import ExportError

QUANTIZATIONS = ("none", "float16", "dynamic_int8")


def supported_families():
    """Names of the registered families that export to LiteRT-LM."""
    from keras_zoo import presets

    presets._import_families()
    return sorted(name for name, cls in presets._FAMILIES.items()
                  if hasattr(cls, "litertlm_signatures"))


def check_model(model):
    """One ExportError line when ``model`` cannot become a .litertlm bundle."""
    name = type(model).__name__
    if not hasattr(model, "litertlm_signatures"):
        raise ExportError(f"--format=litertlm exports causal language models; {name} is not "
                          f"one. Families that export to LiteRT-LM: "
                          f"{', '.join(supported_families())}")


def tokenizer_section(tokenizer, vocab_size, folder):
    """Writes the tokenizer as LiteRT-LM reads it; returns (path, kind) with
    kind "hf" (tokenizer.json) or "sentencepiece" (the model proto)."""
    from keras_zoo.data.tokenizers import BytePairTokenizer, SentencePieceTokenizer

    if tokenizer is None:
        raise ExportError("--format=litertlm needs the model's tokenizer (the engine takes "
                          "text): load a preset folder that has one, or train the model with "
                          "experiments.train, which makes one")
    if tokenizer.vocab_size != vocab_size:
        raise ExportError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model's "
                          f"vocabulary (vocab_size) is {vocab_size}; LiteRT-LM needs them equal: "
                          "export the tokenizer the model was trained with")
    if isinstance(tokenizer, SentencePieceTokenizer):
        path = os.path.join(folder, "tokenizer.spm")
        with open(path, "wb") as f:
            f.write(tokenizer.proto)
        return path, "sentencepiece"
    if isinstance(tokenizer, BytePairTokenizer):
        path = os.path.join(folder, "tokenizer.json")
        hf_tokenizer_json(tokenizer).save(path)
        return path, "hf"
    raise ExportError(f"LiteRT-LM reads SentencePiece and Hugging Face tokenizers; "
                      f"{type(tokenizer).__name__} has no LiteRT-LM form")


def hf_tokenizer_json(tokenizer):
    """A ``tokenizers.Tokenizer`` equal to our byte-level BPE: GPT-2's
    vocabulary, merges, pre-tokenizer and byte decoding, special tokens whole."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    merges = [tuple(m.split(" ")) for m in tokenizer.merges]
    hf = Tokenizer(models.BPE(vocab=dict(tokenizer.vocabulary), merges=merges))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    specials = sorted(set(tokenizer.special_tokens.values()))
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return hf


def llm_metadata(tokenizer, context_length):
    """The LlmMetadata proto: start/stop tokens, greedy sampling, generic model."""
    from litert_lm_builder.runtime.proto import llm_metadata_pb2

    meta = llm_metadata_pb2.LlmMetadata()
    if tokenizer.start_id is not None:
        meta.start_token.token_ids.ids.append(tokenizer.start_id)
    if tokenizer.end_id is not None:
        meta.stop_tokens.add().token_ids.ids.append(tokenizer.end_id)
    # Greedy = top-p sampling with k = 1 (the engine then takes the first
    # maximum, as argmax): its CPU sampler implements TOP_P only (GREEDY and
    # TOP_K: "Sampler type: N not implemented yet", litert-lm 0.18.1).
    meta.sampler_params.type = type(meta.sampler_params).TOP_P
    meta.sampler_params.k = 1
    meta.sampler_params.p = 1.0
    meta.sampler_params.temperature = 1.0
    meta.max_num_tokens = context_length
    meta.llm_model_type.generic_model.SetInParent()
    meta.supports_thinking = False
    meta.supports_function_calling = False
    return meta


def litertlm_specs(model, prefill_length=None, context_length=None):
    """``{signature: (fn, [(name, shape, dtype)])}`` from the family."""
    check_model(model)
    try:
        return model.litertlm_signatures(prefill_length, context_length)
    except ValueError as e:
        raise ExportError(f"--format=litertlm: {e}") from None


def write_tflite(model, signatures, path, work, quantization="none"):
    """Converts the family's signatures to one TFLite file (builtin ops only)."""
    import keras
    import tensorflow as tf

    from export import tflite

    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, (fn, inputs) in signatures.items():
        archive.add_endpoint(
            name, _positional(fn, [n for n, _, _ in inputs]),
            input_signature=[tf.TensorSpec(shape, dtype, name=n) for n, shape, dtype in inputs])
    saved = os.path.join(work, "saved_model")
    archive.write_out(saved, verbose=False)
    content = tflite.convert(saved, quantization, signature_keys=sorted(signatures))
    ops = tflite.model_ops(content)
    if ops["flex"] or ops["custom"]:
        raise ExportError(f"the LiteRT-LM model uses non-builtin ops {ops['flex'] + ops['custom']}"
                          "; the engine runs builtin ops only")
    with open(path, "wb") as f:
        f.write(content)
    return ops


def _positional(fn, names):
    """``fn`` (inputs by name) as a function of positional inputs (no defaults:
    a SavedModel signature holds tensors only)."""
    def serve(*args):
        return fn(**dict(zip(names, args)))
    return serve


def export_litertlm(model, output, quantization="none", prefill_length=None,
                    context_length=None):
    """Writes ``model`` (a family with ``litertlm_signatures``) to ``output``
    (a .litertlm file); returns a dict describing it."""
    from litert_lm_builder import litertlm_builder

    from export.export import _check_writable, _work_dir, reap_stale_work_dirs

    if quantization not in QUANTIZATIONS:
        raise ExportError(f"--format=litertlm takes --quantization "
                          f"{' / '.join(QUANTIZATIONS)}; got {quantization!r} (full "
                          "int8 needs calibration the engine's file does not carry)")
    signatures = litertlm_specs(model, prefill_length, context_length)
    _check_writable(output, "tflite")
    vocab_size = model.get_zoo_config()["vocab_size"]
    tokenizer = model.tokenizer
    reap_stale_work_dirs(output)
    work = _work_dir(output)
    try:
        tokenizer_path, kind = tokenizer_section(tokenizer, vocab_size, work)
        # the engine takes dimension 2 of the first cache as the context
        context = next(shape[2] for n, shape, _ in next(iter(signatures.values()))[1]
                       if n.startswith("kv_cache_"))
        meta_path = os.path.join(work, "llm_metadata.pb")
        with open(meta_path, "wb") as f:
            f.write(llm_metadata(tokenizer, context).SerializeToString())
        model_path = os.path.join(work, "model.tflite")
        ops = write_tflite(model, signatures, model_path, work, quantization)

        builder = litertlm_builder.LitertLmFileBuilder()
        builder.add_system_metadata(litertlm_builder.Metadata(
            key="Authors", value="keras_zoo export", dtype=litertlm_builder.DType.STRING))
        builder.add_tflite_model(model_path, litertlm_builder.TfLiteModelType.PREFILL_DECODE)
        if kind == "hf":
            builder.add_hf_tokenizer(tokenizer_path)
        else:
            builder.add_sentencepiece_tokenizer(tokenizer_path)
        builder.add_llm_metadata(meta_path)
        tmp = os.path.join(work, "model.litertlm")
        with open(tmp, "wb") as f:
            builder.build(f, validate_metadata=True)
        os.replace(tmp, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"path": output, "format": "litertlm", "quantization": quantization,
            "signatures": {k: {"inputs": [list(map(str, spec)) for spec in v[1]]}
                           for k, v in signatures.items()}, "context_length": context,
            "tokenizer": kind, "start_token": tokenizer.start_id,
            "stop_token": tokenizer.end_id, "size_bytes": os.path.getsize(output), "ops": ops}


# ---------------------------------------------------------------- running a bundle

def read_llm_metadata(path):
    """The LlmMetadata proto packed in a .litertlm file."""
    import io

    from litert_lm_builder import litertlm_peek
    from litert_lm_builder import litertlm_header_schema_py_generated as schema
    from litert_lm_builder.runtime.proto import llm_metadata_pb2

    try:
        header = litertlm_peek.read_litertlm_header(path, io.StringIO())
    except (OSError, ValueError) as e:
        raise ExportError(f"{path!r} is not a .litertlm file: {e}") from None
    sections = header.SectionMetadata()
    for i in range(sections.ObjectsLength()):
        section = sections.Objects(i)
        if section.DataType() == schema.AnySectionDataType.LlmMetadataProto:
            meta = llm_metadata_pb2.LlmMetadata()
            meta.ParseFromString(_section_bytes(path, section))
            return meta
    raise ExportError(f"{path!r} has no LlmMetadata section")


def _section_bytes(path, section):
    with open(path, "rb") as f:
        f.seek(section.BeginOffset())
        return f.read(section.EndOffset() - section.BeginOffset())


def prefill_lengths(path):
    """The token counts of the ``prefill_<P>`` signatures in a .litertlm file."""
    import io

    from ai_edge_litert import schema_py_generated as tflite_schema
    from litert_lm_builder import litertlm_peek
    from litert_lm_builder import litertlm_header_schema_py_generated as schema

    sections = litertlm_peek.read_litertlm_header(path, io.StringIO()).SectionMetadata()
    lengths = []
    for i in range(sections.ObjectsLength()):
        section = sections.Objects(i)
        if section.DataType() == schema.AnySectionDataType.TFLiteModel:
            model = tflite_schema.Model.GetRootAs(_section_bytes(path, section), 0)
            keys = [model.SignatureDefs(s).SignatureKey().decode()
                    for s in range(model.SignatureDefsLength())]
            lengths += [int(k.split("_")[1]) for k in keys if re.fullmatch(r"prefill_\d+", k)]
    return sorted(lengths)


class LiteRTLMGenerator:
    """Greedy text from a .litertlm bundle through LiteRT-LM's own engine
    (``litert_lm.Engine`` -> ``create_session`` -> ``run_prefill`` /
    ``run_decode``), the C++ runtime Android and iOS apps embed.

    ``generate(prompt, max_new_tokens)`` returns the new text (the engine
    stops at the stop token and does not print it); ``timings`` then holds
    the engine's own prefill / decode counts and rates.
    """

    def __init__(self, path, num_threads=1):
        import litert_lm

        self.path = str(path)
        self.metadata = read_llm_metadata(self.path)
        self.context_length = int(self.metadata.max_num_tokens)
        ids = self.metadata.start_token.token_ids.ids
        self.start_id = int(ids[0]) if ids else None
        litert_lm.set_min_log_severity(litert_lm.LogSeverity.ERROR)
        self.prefill_length = max(prefill_lengths(self.path))
        self.engine = litert_lm.Engine(
            self.path, backend=litert_lm.Backend.CPU(thread_count=num_threads),
            max_num_tokens=self.context_length, enable_benchmark=True)
        self.timings = {}

    def prompt_ids(self, prompt):
        """The ids the engine runs for ``prompt``: its start token (if the
        bundle has one), then the tokenizer's ids."""
        return ([] if self.start_id is None else [self.start_id]) + \
            self.engine.tokenize(prompt)

    def generate(self, prompt, max_new_tokens=32):
        if max_new_tokens < 1:
            raise ExportError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        n = len(self.prompt_ids(prompt))
        if n + max_new_tokens > self.context_length:
            raise ExportError(f"prompt of {n} tokens (start token included) + max_new_tokens="
                              f"{max_new_tokens} passes the bundle's context of "
                              f"{self.context_length} tokens; shorten the prompt or export "
                              "with a longer --context_length")
        chunks = math.ceil(n / self.prefill_length)
        if chunks * self.prefill_length > self.context_length:
            raise ExportError(f"prompt of {n} tokens (start token included) takes {chunks} "
                              f"prefill chunks of {self.prefill_length} positions, past the "
                              f"bundle's context of {self.context_length} (the engine counts a "
                              "padded chunk whole); shorten the prompt or export with a "
                              "--context_length that is a multiple of --prefill_length")
        session = self.engine.create_session(apply_prompt_template=False,
                                             max_output_tokens=max_new_tokens)
        try:
            session.run_prefill([prompt])
            text = session.run_decode().texts[0]
            info = session.get_benchmark_info()
        finally:
            session.close()
        self.timings = {"prefill_tokens": info.last_prefill_token_count,
                        "prefill_tokens_per_s": info.last_prefill_tokens_per_second,
                        "decode_tokens": info.last_decode_token_count,
                        "decode_tokens_per_s": info.last_decode_tokens_per_second}
        return text

    def close(self):
        self.engine.close()
