"""Hugging Face GPT-2 folders (``GPT2LMHeadModel`` / ``GPT2Model``) -> ``GPT``.

    gpt = keras_zoo.GPT.from_preset("hf:/path/to/gpt2")   # config.json + model.safetensors
    gpt.generate(["Hello"])                                # vocab.json + merges.txt, if present

The name map (``transformer.`` prefixed or not, as the hub's ``gpt2`` file is):
``wte``/``wpe`` -> token / position embedding; ``h.N.ln_1``, ``h.N.attn.c_attn``,
``h.N.attn.c_proj``, ``h.N.ln_2``, ``h.N.mlp.c_fc``, ``h.N.mlp.c_proj`` ->
block N's attention norm, fused qkv, output projection, MLP norm, fc1, fc2;
``ln_f`` -> final norm. GPT-2's ``Conv1D`` stores weights as (in, out), as a
Keras ``Dense`` kernel does, so they are copied without a transpose, and
``c_attn``'s output is [queries | keys | values], heads in order inside
each, which is the layout ``MultiHeadAttention``'s ``qkv`` splits. The
causal-mask buffers (``attn.bias``, ``attn.masked_bias``) of older files are
not weights and are set aside; an ``lm_head.weight`` must equal ``wte`` (the
tied head).
"""

import logging
import os

import numpy as np

from keras_zoo.converters.huggingface import CheckpointTensors, register_importer
from keras_zoo.presets import PresetError

log = logging.getLogger("keras_zoo")

# Attention variants GPT-2 folders can switch on, and the value GPT-2 itself uses.
_REQUIRED = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
             "add_cross_attention": False}
_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")  # both are GELU's tanh approximation


def gpt_config(folder, config):
    """GPT constructor arguments from a GPT-2 ``config.json``."""
    activation = config.get("activation_function", "gelu_new")
    if activation not in _ACTIVATIONS:
        raise PresetError(f"{folder!r}: activation_function={activation!r}; GPT uses GELU's "
                          f"tanh approximation ({' or '.join(_ACTIVATIONS)})")
    for key, expected in _REQUIRED.items():
        if config.get(key, expected) != expected:
            raise PresetError(f"{folder!r}: {key}={config[key]!r} is not supported (GPT-2 "
                              f"uses {expected})")
    positions = config.get("n_positions", 1024)
    return {
        "vocab_size": config["vocab_size"],
        "max_positions": positions,
        "sequence_length": positions,
        "hidden_dim": config.get("n_embd", 768),
        "num_layers": config.get("n_layer", 12),
        "num_heads": config.get("n_head", 12),
        "mlp_dim": config.get("n_inner"),
        "dropout": config.get("resid_pdrop", 0.1),
        "embedding_dropout": config.get("embd_pdrop", 0.1),
        "attention_dropout": config.get("attn_pdrop", 0.1),
        "layer_norm_epsilon": config.get("layer_norm_epsilon", 1e-5),
        "prefill_length": min(64, positions),
    }


@register_importer("GPT2Model")
@register_importer("GPT2LMHeadModel")
def import_gpt2(folder, config, tensors, overrides, load_weights):
    from keras_zoo import presets
    from keras_zoo.models.gpt import GPT

    presets.check_overrides(GPT, overrides)  # a misspelt option: one line, closest names
    model = GPT(**{**gpt_config(folder, config), **overrides})
    if load_weights:
        load_gpt2_weights(model, tensors, f"Hugging Face GPT-2 checkpoint {folder!r}")
    tokenizer = _tokenizer(folder)
    if tokenizer is not None:
        model.tokenizer = tokenizer
    return model


def load_gpt2_weights(model, tensors, source):
    """Places every tensor of a GPT-2 state dict into ``model`` exactly once
    (PresetError naming whatever is missing, extra or misshapen)."""
    prefix = "transformer." if any(k.startswith("transformer.") for k in tensors) else ""
    names = CheckpointTensors(tensors, source)
    embedding, positions, cached_blocks, final_norm = model._parts
    names.assign(embedding.embeddings, prefix + "wte.weight")
    names.assign(positions.embeddings, prefix + "wpe.weight")
    for i, block in enumerate(cached_blocks.blocks):
        p = f"{prefix}h.{i}."
        for ours, theirs in (
                (block.attention_norm, "ln_1"), (block.mlp_norm, "ln_2")):
            names.assign(ours.gamma, p + theirs + ".weight")
            names.assign(ours.beta, p + theirs + ".bias")
        for dense, theirs in ((block.attention.qkv, "attn.c_attn"),
                              (block.attention.out, "attn.c_proj"),
                              (block.mlp.fc1, "mlp.c_fc"), (block.mlp.fc2, "mlp.c_proj")):
            names.assign(dense.kernel, p + theirs + ".weight")  # Conv1D: (in, out)
            names.assign(dense.bias, p + theirs + ".bias")
        for buffer in ("attn.bias", "attn.masked_bias"):  # causal-mask constants
            if p + buffer in tensors:
                names.take(p + buffer)
    names.assign(final_norm.gamma, prefix + "ln_f.weight")
    names.assign(final_norm.beta, prefix + "ln_f.bias")
    if "lm_head.weight" in tensors:
        head = names.take("lm_head.weight")
        wte = tensors.get(prefix + "wte.weight")
        if wte is not None and (head.shape != wte.shape or not np.array_equal(head, wte)):
            raise PresetError(f"cannot import {source}: lm_head.weight differs from wte.weight; "
                              "GPT ties the output layer to the token embedding")
    names.finish(model)


def _tokenizer(folder):
    """The folder's byte-level BPE (vocab.json + merges.txt), or None."""
    from keras_zoo.data.tokenizers import BytePairTokenizer, TokenizerError

    if not all(os.path.exists(os.path.join(folder, n)) for n in (
            BytePairTokenizer.VOCABULARY_FILE, BytePairTokenizer.MERGES_FILE)):
        log.info("%s has no vocab.json + merges.txt: the model takes token ids", folder)
        return None
    try:
        return BytePairTokenizer.from_folder(folder)
    except TokenizerError as e:
        raise PresetError(str(e)) from None
