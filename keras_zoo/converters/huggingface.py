"""Hugging Face checkpoints (``hf:/path/to/folder``) -> keras_zoo models.

A folder as ``save_pretrained`` writes it: ``config.json`` and
``model.safetensors`` (or shards listed in ``model.safetensors.index.json``).
Tensors are read with the ``safetensors`` package's NumPy API, so neither
torch nor transformers is needed. ``config.json``'s ``architectures`` picks
the importer; each importer places every tensor of the file exactly once
into the model (``CheckpointTensors``) and fails, naming them, if any tensor
is missing, left over or of the wrong shape -- a silently half-loaded model
is the worst outcome of a conversion.
"""

import json
import math
import os

import numpy as np

from keras_zoo.data.tokenizers import Tokenizer, register_tokenizer
from keras_zoo.presets import PresetError

_IMPORTERS = {}  # HF architecture name -> fn(folder, config, tensors, overrides, load_weights)


def register_importer(architecture):
    """Decorator: ``fn(folder, config, tensors, overrides, load_weights) -> model``."""
    def wrap(fn):
        _IMPORTERS[architecture] = fn
        return fn
    return wrap


class CheckpointTensors:
    """The tensors of a foreign checkpoint, handed out by name and accounted for.

    ``take(name)`` returns a tensor once; ``assign(variable, name, transform)``
    takes it, transforms it (e.g. a transpose) and assigns it after a shape
    check. Problems are collected rather than raised one by one, so that
    ``finish()`` can report all of them in one error: tensors the model asked
    for that the file lacks, tensors of the file nothing asked for, tensors
    whose shape does not fit, and model variables that received nothing.
    """

    def __init__(self, tensors, source):
        self.tensors = dict(tensors)
        self.source = source
        self.taken = set()
        self.missing, self.misshapen, self.twice = [], [], []
        self.assigned = set()

    def __contains__(self, name):
        return name in self.tensors

    def take(self, *names):
        """The tensor under the first of ``names`` present (aliases), or None
        (recorded as missing)."""
        for name in names:
            if name in self.tensors:
                if name in self.taken:
                    self.twice.append(name)
                self.taken.add(name)
                return self.tensors[name]
        self.missing.append(names[0])
        return None

    def assign(self, variable, names, transform=None):
        names = (names,) if isinstance(names, str) else tuple(names)
        value = self.take(*names)
        if value is None:
            return
        value = np.asarray(value)
        if transform is not None:
            try:
                value = transform(value)
            except (ValueError, IndexError) as e:  # a wrong-rank tensor breaks the transform
                self.misshapen.append(f"{names[0]} {tuple(self.tensors[names[0]].shape)} "
                                      f"({type(e).__name__})")
                return
        if tuple(value.shape) != tuple(variable.shape):
            self.misshapen.append(f"{names[0]} {tuple(self.tensors[names[0]].shape)} for "
                                  f"{variable.path} {tuple(variable.shape)}")
            return
        variable.assign(value.astype(variable.dtype))
        self.assigned.add(id(variable))

    def finish(self, model=None):
        """Raises PresetError if anything was missing, left over, misshapen, taken
        twice, or (given ``model``) a model variable got no tensor."""
        extra = sorted(set(self.tensors) - self.taken)
        unfilled = [] if model is None else [v.path for v in model.weights
                                             if id(v) not in self.assigned]
        problems = []
        for label, items in (("missing from the file", self.missing),
                             ("in the file but not placed", extra),
                             ("of the wrong shape", self.misshapen),
                             ("placed twice", self.twice),
                             ("model variables left unassigned", unfilled)):
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)"
                                                if len(items) > 8 else "")
                problems.append(f"{label}: {shown}")
        if problems:
            raise PresetError(f"cannot import {self.source}: " + "; ".join(problems))


# Weight files keras_zoo never opens: pickles run code when loaded.
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt", ".pkl", ".pickle", ".joblib")


def safe_path(folder, name, what):
    """``folder/name`` for a file name read from a checkpoint's own files (an
    index's shard, a tokenizer's vocabulary): a name that leaves the folder
    (absolute, ``..``, a drive) is one PresetError. Symlinks inside the folder
    are followed: the hub cache links every snapshot file to its blobs/."""
    if not isinstance(name, str) or not name:
        raise PresetError(f"{folder!r}: {what} {name!r} is not a file name")
    parts = name.replace("\\", "/").split("/")
    if os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in parts \
            or ":" in parts[0]:
        raise PresetError(f"{folder!r}: {what} {name!r} leaves the checkpoint folder; "
                          "refused (only files inside the folder are read)")
    return os.path.join(folder, *parts)


def _pickles(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith(PICKLE_SUFFIXES)
                  or ".bin.index" in n or ".pt.index" in n)


def read_safetensors(folder):
    """{name: np.ndarray} of ``model.safetensors`` or of the shards its index
    lists (each inside the folder). Pickled weights (pytorch_model.bin, .pth,
    .ckpt, .pkl) are never opened: a folder with both formats uses safetensors,
    a folder with pickles only is one PresetError."""
    from safetensors.numpy import load_file

    single = os.path.join(folder, "model.safetensors")
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(single):
        files = [single]
    elif os.path.exists(index):
        from keras_zoo.presets import read_json

        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise PresetError(f"{index}: 'weight_map' must map tensor names to shard files")
        files = [safe_path(folder, n, "shard") for n in sorted(set(weight_map.values()))]
        for name, path in zip(sorted(set(weight_map.values())), files):
            if not name.endswith(".safetensors"):
                raise PresetError(f"{index}: shard {name!r} is not a .safetensors file; "
                                  "keras_zoo reads safetensors only")
            if not os.path.exists(path):
                raise PresetError(f"{index} lists shard {name!r}, which the folder lacks")
    else:
        pickles = _pickles(folder)
        if pickles:
            raise PresetError(
                f"Hugging Face folder {folder!r} holds only pickled weights "
                f"({', '.join(pickles[:3])}); keras_zoo never unpickles (a pickle runs code "
                "when loaded): use the repo's model.safetensors, or convert once with "
                "transformers' save_pretrained(..., safe_serialization=True) where you trust "
                "the file")
        raise PresetError(f"Hugging Face folder {folder!r} has no model.safetensors (nor "
                          "model.safetensors.index.json); save it with "
                          "save_pretrained(..., safe_serialization=True)")
    tensors = {}
    for path in files:
        try:
            tensors.update(load_file(path))
        except Exception as e:  # safetensors raises its own error types
            raise PresetError(f"{path!r} is not a readable safetensors file: {e}") from e
    return tensors


def architectures_of(config):
    """The importer names a config.json asks for: transformers' ``architectures``;
    a timm checkpoint (``architecture`` + ``pretrained_cfg``, no ``architectures``)
    asks for the importer registered as ``"timm"``."""
    names = config.get("architectures") or []
    if not names and isinstance(config.get("architecture"), str):
        names = ["timm"]
    return list(names)


def load(cls, folder, overrides=None, load_weights=True, source=None):
    """Implements ``from_preset("hf:<folder>")`` (and, with ``source`` = the URI,
    ``hf://ORG/NAME`` once downloaded: keras_zoo/hub.py)."""
    from keras_zoo.presets import read_json

    folder = os.path.expanduser(folder)
    where = f"{source} ({folder})" if source else repr(folder)
    if not os.path.isdir(folder):
        raise PresetError(f"hf: preset {folder!r} is not a folder")
    config = read_json(os.path.join(folder, "config.json"))
    architectures = architectures_of(config)
    known = [a for a in architectures if a in _IMPORTERS]
    if not known:
        raise PresetError(f"{where} holds a Hugging Face {architectures or '(unnamed)'} "
                          f"checkpoint; keras_zoo imports {sorted(_IMPORTERS)}")
    tensors = read_safetensors(folder) if load_weights else {}
    # A family that trains around a backbone (DINO) takes the checkpoint as its
    # backbone: the overrides are its own options, not the backbone's.
    wrap = getattr(cls, "from_backbone", None) if cls.__name__ != "ZooModel" else None
    model = _IMPORTERS[known[0]](folder, config, tensors,
                                 {} if wrap else dict(overrides or {}), load_weights)
    if wrap is not None and not isinstance(model, cls):
        try:
            model = wrap(model, **dict(overrides or {}))
        except (ValueError, TypeError) as e:
            raise PresetError(f"{where}: {cls.__name__} around its {type(model).__name__}: "
                              f"{str(e).splitlines()[0]}") from e
    if cls.__name__ != "ZooModel" and not isinstance(model, cls):
        raise PresetError(f"{where} holds a {type(model).__name__}, not a {cls.__name__}")
    return model


# ---------------------------------------------------------------- tokenizer

@register_tokenizer
class HuggingFaceTokenizer(Tokenizer):
    """A Hugging Face ``tokenizer.json`` (any model: byte-level BPE such as
    GPT-NeoX's, WordPiece, Unigram) run by the ``tokenizers`` library, so ids
    and text are exactly the checkpoint's. Travels in a keras_zoo preset as
    ``hf_tokenizer.json``. ``tf_encode`` calls the same library from tf.data
    (``tf.py_function``: host-side, like all input pipelines here)."""

    FILE = "hf_tokenizer.json"

    def __init__(self, json_bytes, special_tokens=None):
        from tokenizers import Tokenizer as _Rust

        super().__init__(special_tokens)
        self.json_bytes = bytes(json_bytes)
        self._hf = _Rust.from_str(self.json_bytes.decode("utf-8"))

    @classmethod
    def from_hf_folder(cls, folder, config):
        """The folder's tokenizer.json, special tokens from config.json's ids."""
        with open(os.path.join(folder, "tokenizer.json"), "rb") as f:
            tokenizer = cls(f.read())
        roles = {"start": "bos_token_id", "end": "eos_token_id", "pad": "pad_token_id",
                 "unk": "unk_token_id"}
        for role, key in roles.items():
            token = None if config.get(key) is None else tokenizer.id_to_token(config[key])
            if token is not None:
                tokenizer.special_tokens[role] = token
        return tokenizer

    @property
    def vocab_size(self):
        return self._hf.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token):
        return self._hf.token_to_id(token)

    def id_to_token(self, i):
        return self._hf.id_to_token(int(i))

    def _encode_one(self, text):
        return self._hf.encode(text, add_special_tokens=False).ids

    def _decode_one(self, ids):
        return self._hf.decode(ids, skip_special_tokens=False)

    def tf_encode(self, texts):
        import tensorflow as tf

        def encode(batch):
            ids = [self._encode_one(t.decode("utf-8")) for t in batch.numpy()]
            return (np.asarray([i for row in ids for i in row], "int32"),
                    np.asarray([len(row) for row in ids], "int64"))

        values, lengths = tf.py_function(encode, [texts], (tf.int32, tf.int64))
        values.set_shape([None])
        lengths.set_shape([None])
        return tf.RaggedTensor.from_row_lengths(values, lengths)

    def _files(self):
        return {self.FILE: self.json_bytes}

    @classmethod
    def from_files(cls, files, special_tokens=None, **config):
        return cls(files[cls.FILE], special_tokens)


def _attach_hf_tokenizer(model, folder, config):
    if os.path.exists(os.path.join(folder, "tokenizer.json")):
        model.tokenizer = HuggingFaceTokenizer.from_hf_folder(folder, config)


# ---------------------------------------------------------------- Mamba

@register_importer("MambaForCausalLM")
def _mamba(folder, config, tensors, overrides, load_weights):
    """MambaForCausalLM (the state-spaces ``-hf`` checkpoints): backbone.embeddings,
    backbone.layers.N.{norm, mixer.{in_proj, conv1d, x_proj, dt_proj, A_log, D,
    out_proj}}, backbone.norm_f, lm_head when untied. Biases are taken from
    the file, not from the config's flags; the folder's tokenizer.json (GPT-NeoX
    BPE) becomes ``model.tokenizer``."""
    from keras_zoo import presets
    from keras_zoo.models.mamba import Mamba

    presets.check_overrides(Mamba, overrides)  # a misspelt option: one line, closest names
    if config.get("hidden_act", "silu") not in ("silu", "swish"):
        raise PresetError(f"{folder!r}: hidden_act={config['hidden_act']!r}; Mamba uses silu")
    names = CheckpointTensors(tensors, f"Hugging Face Mamba checkpoint {folder!r}")
    embedding = ("backbone.embeddings.weight", "backbone.embedding.weight")
    first = "backbone.layers.0.mixer."
    vocabulary = config["vocab_size"]
    if load_weights:
        rows = next((tensors[n].shape[0] for n in embedding if n in tensors), vocabulary)
        use_bias = first + "in_proj.bias" in tensors
        use_conv_bias = first + "conv1d.bias" in tensors
        tie = "lm_head.weight" not in tensors or (
            config.get("tie_word_embeddings", True)
            and np.array_equal(tensors["lm_head.weight"], tensors.get(embedding[0])))
    else:
        rows, use_bias = vocabulary, config.get("use_bias", False)
        use_conv_bias = config.get("use_conv_bias", True)
        tie = config.get("tie_word_embeddings", True)
    rank = config.get("time_step_rank", "auto")
    kwargs = {
        # HF keeps the vocabulary unpadded; pad only if that gives the file's rows.
        "vocab_size": rows,
        "pad_vocab_multiple": 8 if rows % 8 == 0 else 1,
        "hidden_dim": config["hidden_size"],
        "num_layers": config["num_hidden_layers"],
        "state_dim": config.get("state_size", 16),
        "conv_kernel": config.get("conv_kernel", 4),
        "expand": config.get("expand", 2),
        "dt_rank": None if rank == "auto" else int(rank),
        "norm_epsilon": config.get("layer_norm_epsilon", 1e-5),
        "tie_embeddings": bool(tie),
        "use_bias": bool(use_bias),
        "use_conv_bias": bool(use_conv_bias),
        "residual_in_fp32": bool(config.get("residual_in_fp32", True)),
    }
    if kwargs["dt_rank"] == math.ceil(kwargs["hidden_dim"] / 16):
        kwargs["dt_rank"] = None
    model = Mamba(**{**kwargs, **overrides})
    _attach_hf_tokenizer(model, folder, config)
    if not load_weights:
        return model
    embedding_layer, blocks, final_norm, head = model._parts
    names.assign(embedding_layer.embeddings, embedding)
    if tie and "lm_head.weight" in tensors:
        names.take("lm_head.weight")  # a tied copy saved anyway: equal, checked above
    for i, block in enumerate(blocks):
        p = f"backbone.layers.{i}."
        mixer = block.mixer
        names.assign(block.norm.scale, p + "norm.weight")
        names.assign(mixer.in_proj.kernel, p + "mixer.in_proj.weight", np.transpose)
        names.assign(mixer.conv1d_kernel, p + "mixer.conv1d.weight",
                     lambda w: np.transpose(w[:, 0, :]))  # (inner, 1, k) -> (k, inner)
        names.assign(mixer.x_proj.kernel, p + "mixer.x_proj.weight", np.transpose)
        names.assign(mixer.dt_proj.kernel, p + "mixer.dt_proj.weight", np.transpose)
        names.assign(mixer.dt_proj.bias, p + "mixer.dt_proj.bias")
        names.assign(mixer.scan.A_log, p + "mixer.A_log")
        names.assign(mixer.scan.D, p + "mixer.D")
        names.assign(mixer.out_proj.kernel, p + "mixer.out_proj.weight", np.transpose)
        if use_bias:
            names.assign(mixer.in_proj.bias, p + "mixer.in_proj.bias")
            names.assign(mixer.out_proj.bias, p + "mixer.out_proj.bias")
        if use_conv_bias:
            names.assign(mixer.conv1d_bias, p + "mixer.conv1d.bias")
    names.assign(final_norm.scale, "backbone.norm_f.weight")
    if head is not None:
        names.assign(head.kernel, "lm_head.weight", np.transpose)
    names.finish(model)
    return model
