"""Hugging Face BERT folders (``BERT.from_preset("hf:/path")``) -> keras_zoo BERT.

``BertModel`` (the encoder and pooler), ``BertForPreTraining`` (plus the
masked-LM and next-sentence heads: ``task="pretraining"``), ``BertForMaskedLM``
(``task="masked_lm"``; or ``"pretraining"`` when the file also holds the
pooler and next-sentence head, as the hub's bert-base-uncased does),
``BertForSequenceClassification`` (``"classification"``, ``num_classes`` =
the config's labels, their names in ``model.label_names``),
``BertForTokenClassification`` (``"token_classification"``) and
``BertForQuestionAnswering`` (``"question_answering"``) saved by
``save_pretrained``: config.json + model.safetensors (+ vocab.txt and
tokenizer_config.json, which become the model's ``WordPieceTokenizer``).
Every tensor is placed exactly once (``CheckpointTensors``): Linear weights
are (out, in) and are transposed; query, key and value are fused into our
one ``qkv`` projection; keys may carry a ``bert.`` prefix; LayerNorm
parameters may be named ``weight``/``bias`` or, in older files,
``gamma``/``beta``; the ``position_ids`` buffer is not a weight; a tied
decoder matrix or decoder bias stored anyway must equal the embedding /
output bias it is tied to.

Overrides that change the head (``task="classification", num_classes=8``)
import the checkpoint as saved, then keep the encoder's weights in the new
model (``presets.transfer_weights``): the file's heads are dropped on request.
"""

import json
import logging
import os

import numpy as np

from keras_zoo.converters.huggingface import CheckpointTensors, register_importer
from keras_zoo.presets import PresetError

log = logging.getLogger("keras_zoo")

# The file's architecture -> our task.
ARCHITECTURES = {"BertModel": None, "BertForPreTraining": "pretraining",
                 "BertForMaskedLM": "masked_lm",
                 "BertForSequenceClassification": "classification",
                 "BertForTokenClassification": "token_classification",
                 "BertForQuestionAnswering": "question_answering"}
# The head's tensors (without ``.weight``/``.bias``) in a task's file.
_HEADS = {"classification": "classifier", "token_classification": "classifier",
          "question_answering": "qa_outputs"}


# Hugging Face's names -> ours: "gelu" is exact, "gelu_new" / "gelu_pytorch_tanh"
# the tanh approximation (google-research/bert's modeling.py gelu)
_HIDDEN_ACTS = {"gelu": "gelu", "gelu_new": "gelu_approximate",
                "gelu_pytorch_tanh": "gelu_approximate"}


def bert_config(folder, config, task):
    """Our BERT config from a Hugging Face BertConfig (checked)."""
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size")
    missing = [k for k in required if k not in config]
    if missing or config.get("model_type", "bert") != "bert":
        raise PresetError(f"{folder!r}: config.json is not a BertConfig (model_type="
                          f"{config.get('model_type')!r}; missing {missing})")
    act = config.get("hidden_act", "gelu")
    if act not in _HIDDEN_ACTS:
        raise PresetError(f"{folder!r}: hidden_act={act!r}; BERT takes {sorted(_HIDDEN_ACTS)}")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise PresetError(f"{folder!r}: position_embedding_type="
                          f"{config['position_embedding_type']!r}; BERT uses 'absolute'")
    positions = config.get("max_position_embeddings", 512)
    labels = num_labels(folder, config)
    return {
        "vocab_size": config["vocab_size"],
        "hidden_dim": config["hidden_size"],
        "num_layers": config["num_hidden_layers"],
        "num_heads": config["num_attention_heads"],
        "intermediate_dim": config["intermediate_size"],
        "max_sequence_length": positions,
        "num_segments": config.get("type_vocab_size", 2),
        "dropout": config.get("hidden_dropout_prob", 0.1),
        "attention_dropout": config.get("attention_probs_dropout_prob", 0.1),
        "layer_norm_epsilon": config.get("layer_norm_eps", 1e-12),
        "initializer_range": config.get("initializer_range", 0.02),
        "sequence_length": min(128, positions),
        "task": task,
        **({"num_classes": labels} if task in _HEADS and task != "question_answering" else {}),
        "hidden_act": _HIDDEN_ACTS[act],
    }


def num_labels(folder, config):
    """transformers' rule: ``id2label`` sets the count (``num_labels`` when the
    config has no label map); 2 without either."""
    id2label = config.get("id2label")
    count = len(id2label) if isinstance(id2label, dict) and id2label else config.get(
        "num_labels", 2)
    if not isinstance(count, int) or count < 1:
        raise PresetError(f"{folder!r}: num_labels={count!r} must be a positive integer")
    return count


def label_names(config):
    """[name of label 0, 1, ...] from ``id2label``, or None (transformers'
    default ``LABEL_i`` names are not names)."""
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        return None
    try:
        names = [str(id2label.get(str(i), id2label.get(i))) for i in range(len(id2label))]
    except TypeError:
        return None
    return None if names == [f"LABEL_{i}" for i in range(len(names))] else names


def _linear(tensors, dense, name):
    """A torch Linear, (out, in) weight, into a Keras Dense, (in, out) kernel."""
    tensors.assign(dense.kernel, name + ".weight", np.transpose)
    tensors.assign(dense.bias, name + ".bias")


def _norm(tensors, layer, name):
    tensors.assign(layer.gamma, (name + ".weight", name + ".gamma"))
    tensors.assign(layer.beta, (name + ".bias", name + ".beta"))


def _prefix(tensors):
    return "bert." if any(k.startswith("bert.") for k in tensors) else ""


def place_backbone(model, tensors, p):
    """Embeddings, encoder blocks and (when the model has it) the pooler."""
    layer = model.get_layer
    tensors.assign(layer("token_embedding").embeddings, p + "embeddings.word_embeddings.weight")
    tensors.assign(layer("position_embedding").embeddings,
                   p + "embeddings.position_embeddings.weight")
    tensors.assign(layer("segment_embedding").embeddings,
                   p + "embeddings.token_type_embeddings.weight")
    _norm(tensors, layer("embedding_norm"), p + "embeddings.LayerNorm")
    if p + "embeddings.position_ids" in tensors:
        tensors.take(p + "embeddings.position_ids")  # a buffer (0, 1, 2, ...), not a weight
    for i in range(model.get_zoo_config()["num_layers"]):
        block, h = layer(f"encoder_block_{i}"), f"{p}encoder.layer.{i}."
        s = h + "attention.self."
        q, k, v = (tensors.take(s + n + ".weight") for n in ("query", "key", "value"))
        qb, kb, vb = (tensors.take(s + n + ".bias") for n in ("query", "key", "value"))
        attention = block.attention
        # (out, in) each -> one (in, 3 * out) matrix: q, then k, then v.
        _assign_fused(tensors, attention.qkv.kernel, (q, k, v), s + "{query,key,value}.weight",
                      lambda parts: np.concatenate(parts, 0).T)
        _assign_fused(tensors, attention.qkv.bias, (qb, kb, vb), s + "{query,key,value}.bias",
                      lambda parts: np.concatenate(parts, 0))
        _linear(tensors, attention.out, h + "attention.output.dense")
        _norm(tensors, block.attention_norm, h + "attention.output.LayerNorm")
        _linear(tensors, block.mlp.fc1, h + "intermediate.dense")
        _linear(tensors, block.mlp.fc2, h + "output.dense")
        _norm(tensors, block.mlp_norm, h + "output.LayerNorm")
    if any(w.path.startswith("pooler/") for w in model.weights):
        _linear(tensors, layer("pooler"), p + "pooler.dense")
    elif p + "pooler.dense.weight" in tensors:  # saved, but this head never reads it
        tensors.take(p + "pooler.dense.weight")
        tensors.take(p + "pooler.dense.bias")
        log.info("%s: the pooler is in the file but unused by the %s head (as in transformers)",
                 tensors.source, model.get_zoo_config()["task"])


def _assign_fused(tensors, variable, parts, name, fuse):
    """Assigns q, k and v (taken by name already; None when missing) as one tensor."""
    if any(part is None for part in parts):
        return
    try:
        value = fuse(parts)
    except ValueError:  # parts of different shapes
        value = None
    if value is None or tuple(value.shape) != tuple(variable.shape):
        tensors.misshapen.append(f"{name} {[tuple(p.shape) for p in parts]} for "
                                 f"{variable.path} {tuple(variable.shape)}")
        return
    variable.assign(value.astype(variable.dtype))
    tensors.assigned.add(id(variable))


def place_pretraining_heads(model, tensors):
    """The masked-LM head, and for ``task="pretraining"`` the next-sentence head."""
    layer = model.get_layer
    transform = layer("mlm_transform")
    _linear(tensors, transform.dense, "cls.predictions.transform.dense")
    _norm(tensors, transform.norm, "cls.predictions.transform.LayerNorm")
    tensors.assign(layer("mlm_output_bias").bias, "cls.predictions.bias")
    if model.get_zoo_config()["task"] == "pretraining":
        _linear(tensors, layer("nsp_head"), "cls.seq_relationship")
    # The decoder is tied to the word embeddings (and its bias to the output
    # bias); a file that stores them anyway must store the same numbers.
    for copy, original in (("cls.predictions.decoder.weight",
                            _prefix(tensors.tensors) + "embeddings.word_embeddings.weight"),
                           ("cls.predictions.decoder.bias", "cls.predictions.bias")):
        if copy in tensors:
            value = tensors.take(copy)
            if original in tensors and not np.array_equal(value, tensors.tensors[original]):
                tensors.misshapen.append(f"{copy} differs from {original}, which it is "
                                         "tied to in BERT")


def load_tokenizer(folder):
    """vocab.txt (+ tokenizer_config.json's do_lower_case) as a WordPieceTokenizer
    with Hugging Face's 100-character word limit; without a vocab.txt, the
    WordPiece vocabulary of tokenizer.json (its BertNormalizer's lowercase,
    its max_input_chars_per_word); None without either."""
    from keras_zoo.data.tokenizers import TokenizerError, WordPieceTokenizer

    path = os.path.join(folder, "vocab.txt")
    if not os.path.exists(path):
        return _tokenizer_from_json(folder)
    lowercase = True
    settings = os.path.join(folder, "tokenizer_config.json")
    if os.path.exists(settings):
        with open(settings) as f:
            lowercase = bool(json.load(f).get("do_lower_case", True))
    try:
        return WordPieceTokenizer.from_vocab_file(path, lowercase=lowercase,
                                                  max_chars_per_word=100)
    except TokenizerError as e:
        raise PresetError(f"{path}: {e}") from None


def _tokenizer_from_json(folder):
    from keras_zoo.data.tokenizers import TokenizerError, WordPieceTokenizer
    from keras_zoo.presets import read_json

    path = os.path.join(folder, "tokenizer.json")
    if not os.path.exists(path):
        return None
    spec = read_json(path)
    model = spec.get("model") or {}
    vocab = model.get("vocab")
    if model.get("type") != "WordPiece" or not isinstance(vocab, dict) or not vocab:
        raise PresetError(f"{path}: a BERT tokenizer.json must hold a WordPiece model with "
                          f"its vocab, got type {model.get('type')!r}")
    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
        raise PresetError(f"{path}: the WordPiece vocab ids are not 0..{len(ids) - 1}")
    tokens = [None] * len(ids)
    for token, i in vocab.items():
        tokens[i] = token
    normalizer = spec.get("normalizer") or {}
    lowercase = bool(normalizer.get("lowercase", True)) \
        if normalizer.get("type") == "BertNormalizer" else True
    try:
        return WordPieceTokenizer(tokens, lowercase=lowercase,
                                  max_chars_per_word=model.get("max_input_chars_per_word", 100))
    except TokenizerError as e:
        raise PresetError(f"{path}: {e}") from None


def _importer(architecture):
    def load(folder, config, tensors, overrides, load_weights):
        from keras_zoo import presets
        from keras_zoo.models.bert import BERT

        presets.check_overrides(BERT, overrides)
        task = ARCHITECTURES[architecture]
        if task == "masked_lm" and "cls.seq_relationship.weight" in tensors \
                and _prefix(tensors) + "pooler.dense.weight" in tensors:
            task = "pretraining"  # the hub's bert-base-uncased: every pre-training head saved
        base = bert_config(folder, config, task)
        if task in ("classification", "token_classification") and label_names(config):
            base["label_names"] = label_names(config)  # the file's label map, if it names it
        if base.get("label_names") and "label_names" not in overrides and \
                overrides.get("num_classes", base["num_classes"]) != base["num_classes"]:
            overrides = {**overrides, "label_names": None}  # a new head: the names no longer apply
        model = BERT(**base)
        if load_weights:
            names = CheckpointTensors(tensors, f"Hugging Face {architecture} checkpoint "
                                               f"{folder!r}")
            place_backbone(model, names, _prefix(tensors))
            if task in ("pretraining", "masked_lm"):
                place_pretraining_heads(model, names)
            elif task in _HEADS:  # torch Linear (labels, width) -> Dense (width, labels)
                _linear(names, model.get_layer("head"), _HEADS[task])
            names.finish(model)
        if overrides and any(base.get(k) != v for k, v in overrides.items()):
            target = BERT(**{**base, **overrides})
            presets.transfer_weights(model, target)
            model = target
        model.tokenizer = load_tokenizer(folder)
        return model
    return load


for _architecture in ARCHITECTURES:
    register_importer(_architecture)(_importer(_architecture))
