"""BERT (Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional
Transformers for Language Understanding"), following google-research/bert's
modeling.py, run_pretraining.py, run_classifier.py and run_squad.py.

    token ids ──> token + position + segment embeddings ──> LayerNorm ──> dropout
              ──> L post-LN encoder blocks ──> sequence output (B, T, D)
                                               └─ [CLS] ──> pooler (dense, tanh) (B, D)

One family, several heads, picked by the ``task`` config value:

* ``None``: the backbone, ``{"sequence_output", "pooled_output"}``;
* ``"pretraining"``: masked LM (dense + GELU + LayerNorm, then logits through
  the token embedding matrix, tied, plus an output bias) at the
  ``mask_positions`` only, and next-sentence prediction on the pooled
  [CLS]: ``{"mlm", "nsp"}``; data from documents
  (keras_zoo/data/bert_pretraining.py);
* ``"masked_lm"``: the masked-LM head alone, ``{"mlm"}`` (Hugging Face's
  ``BertForMaskedLM`` without pooler and next-sentence head);
* ``"classification"``: dropout + dense on the pooled [CLS] (a text, or a
  text pair as ``[CLS] A [SEP] B [SEP]``);
* ``"token_classification"``: dropout + dense on every token (labels on a
  word's first piece, as the paper's NER);
* ``"question_answering"``: start and end logits over the tokens
  (``{"start_logits", "end_logits"}``); ``answer()`` decodes the best valid
  span (keras_zoo/data/squad.py).

Changing ``task`` in ``from_preset`` keeps the backbone's weights: a
pre-trained preset becomes a classifier with a new head.
"""

from typing import ClassVar

import keras
import numpy as np
from keras import layers, ops

from keras_zoo.layers.embeddings import PositionEmbedding, TokenEmbedding
from keras_zoo.layers.normalization import LayerNormalization
from keras_zoo.layers.transformer import TransformerEncoderBlock
from keras_zoo.models.base import ZooModel
from keras_zoo.models.checks import check_count, check_token_ids
from keras_zoo.models.text_data import TextData
from keras_zoo.presets import register_family, register_preset

TASKS = (None, "pretraining", "classification", "token_classification",
         "question_answering", "masked_lm")
INPUTS = ("token_ids", "segment_ids", "padding_mask")
# "gelu": the exact erf GELU, as Hugging Face's BertModel (hidden_act="gelu");
# "gelu_approximate": the tanh form google-research/bert's modeling.py computes
HIDDEN_ACTS = ("gelu", "gelu_approximate")


# ---------------------------------------------------------------- layers

@keras.saving.register_keras_serializable(package="keras_zoo")
class FirstToken(layers.Layer):
    """(B, T, D) -> (B, D): the [CLS] token, which the pooler reads."""

    def call(self, x):
        # A [:, :1] slice + reshape lowers to SLICE + RESHAPE in TFLite, which
        # XNNPACK delegates; x[:, 0] becomes a STRIDED_SLICE it does not.
        return ops.reshape(x[:, :1], (-1, x.shape[-1]))

    def compute_output_shape(self, s):
        return (s[0], s[2])


@keras.saving.register_keras_serializable(package="keras_zoo")
class MaskedMean(layers.Layer):
    """(B, T, D) tokens, (B, T) padding mask -> (B, D): the mean over real tokens."""

    def call(self, x, padding):
        weight = ops.cast(padding, x.dtype)[..., None]
        return ops.sum(x * weight, axis=1) / ops.maximum(ops.sum(weight, axis=1), 1.0)

    def compute_output_shape(self, x_shape, padding_shape):
        return (x_shape[0], x_shape[2])


@keras.saving.register_keras_serializable(package="keras_zoo")
class GatherPositions(layers.Layer):
    """(B, T, D) sequence, (B, P) positions -> (B, P, D): the vectors at the
    masked positions (modeling.py's gather_indexes: one flat gather)."""

    def call(self, sequence, positions):
        b, t, d = ops.shape(sequence)[0], ops.shape(sequence)[1], sequence.shape[-1]
        offsets = ops.arange(b, dtype="int32")[:, None] * t
        flat = ops.reshape(ops.cast(positions, "int32") + offsets, (-1,))
        gathered = ops.take(ops.reshape(sequence, (-1, d)), flat, axis=0)
        return ops.reshape(gathered, (b, ops.shape(positions)[1], d))

    def compute_output_shape(self, sequence_shape, positions_shape):
        return (sequence_shape[0], positions_shape[1], sequence_shape[2])


@keras.saving.register_keras_serializable(package="keras_zoo")
class MaskedLMTransform(layers.Layer):
    """The masked-LM head's transform before the tied output projection:
    dense (D -> D) + GELU + LayerNorm (run_pretraining.py cls/predictions/transform)."""

    def __init__(self, layer_norm_epsilon=1e-12, activation="gelu", **kwargs):
        super().__init__(**kwargs)
        self.layer_norm_epsilon = layer_norm_epsilon
        self.activation_name = activation

    def build(self, input_shape):
        from keras_zoo.layers import activations

        self.dense = layers.Dense(input_shape[-1], dtype=self.dtype_policy, name="dense")
        self.dense.build(input_shape)
        self.activation = activations.get(self.activation_name)
        self.norm = LayerNormalization(epsilon=self.layer_norm_epsilon,
                                       dtype=self.dtype_policy, name="norm")
        self.norm.build(input_shape)

    def call(self, x):
        return self.norm(self.activation(self.dense(x)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "layer_norm_epsilon": self.layer_norm_epsilon,
                "activation": self.activation_name}


@keras.saving.register_keras_serializable(package="keras_zoo")
class OutputBias(layers.Layer):
    """Adds a learned bias per vocabulary entry to tied-embedding logits
    (the masked-LM head's own ``output_bias``, zeros at first)."""

    def build(self, input_shape):
        self.bias = self.add_weight(shape=(input_shape[-1],), initializer="zeros",
                                    name="bias")

    def call(self, logits):
        return logits + ops.cast(self.bias, logits.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


# ---------------------------------------------------------------- the family

@register_family
@keras.saving.register_keras_serializable(package="keras_zoo")
class BERT(TextData, ZooModel):
    """BERT encoder + the head of ``task`` (see the module docstring).

    BERT-Base: vocabulary 30,522, width 768, 12 blocks of 12 heads, feed-forward
    3,072, 512 positions, 2 segments, post-LN with epsilon 1e-12,
    weights drawn from a normal truncated at 2 sigma, sigma 0.02:
    109,482,240 parameters with the pooler.

    ``hidden_act`` (feed-forward and masked-LM transform): "gelu" (default),
    the exact x * Phi(x), as Hugging Face's ``BertModel``; "gelu_approximate",
    the tanh approximation google-research/bert's ``modeling.py`` ``gelu``
    computes (its checkpoints were trained with it; the two differ by < 1e-3).

    Inputs (dict): ``token_ids``, ``segment_ids`` (0 for A, 1 for B) and
    ``padding_mask`` (1 = token, 0 = padding; padded keys get no attention),
    each (B, T) int32 with T <= ``max_sequence_length``; missing
    ``segment_ids``/``padding_mask`` default to zeros/ones. Pre-training adds
    ``mask_positions`` (B, ``max_predictions_per_seq``).

    Data settings travel in the config: ``sequence_length`` (training and
    export length, 128 as the original's first phase),
    ``max_predictions_per_seq`` (20 at 128) and ``masked_lm_prob`` (0.15),
    ``short_seq_prob`` (0.1). ``model.tokenizer`` is a ``WordPieceTokenizer``
    (trained on the training split by ``experiments.train`` when the preset
    has none) and travels in preset folders.
    """

    # Layers a change of task may add (presets.transfer_weights initialises them).
    head_layer_names = ("head", "mlm_transform", "mlm_output_bias", "nsp_head")

    def __init__(self, vocab_size=30522, hidden_dim=768, num_layers=12, num_heads=12,
                 intermediate_dim=3072, max_sequence_length=512, num_segments=2,
                 dropout=0.1, attention_dropout=0.1, layer_norm_epsilon=1e-12,
                 initializer_range=0.02, task=None, num_classes=2, sequence_length=128,
                 max_predictions_per_seq=20, masked_lm_prob=0.15, short_seq_prob=0.1,
                 hidden_act="gelu", label_names=None, name="bert", **kwargs):
        from keras_zoo.preprocessing import check_label_names

        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
        if hidden_act not in HIDDEN_ACTS:
            raise ValueError(f"hidden_act must be one of {HIDDEN_ACTS}, got {hidden_act!r}")
        if label_names is not None:  # one name per class of a (token) classification head
            check_label_names(label_names, num_classes)
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim={hidden_dim} is not divisible by num_heads={num_heads}")
        if not 2 < sequence_length <= max_sequence_length:
            raise ValueError(f"sequence_length={sequence_length} must be in 3.."
                             f"{max_sequence_length} (max_sequence_length, the position table)")
        inputs = {key: keras.Input((None,), dtype="int32", name=key) for key in INPUTS}
        token_embedding = TokenEmbedding(vocab_size, hidden_dim, name="token_embedding")
        x = token_embedding(inputs["token_ids"])
        x = PositionEmbedding(max_sequence_length, name="position_embedding")(x)
        x = layers.Add(name="add_segment")(
            [x, layers.Embedding(num_segments, hidden_dim, name="segment_embedding")(
                inputs["segment_ids"])])
        x = LayerNormalization(epsilon=layer_norm_epsilon, name="embedding_norm")(x)
        x = layers.Dropout(dropout, name="embedding_dropout")(x)
        for i in range(num_layers):
            x = TransformerEncoderBlock(
                num_heads, intermediate_dim, dropout=dropout,
                attention_dropout=attention_dropout, activation=hidden_act, norm_first=False,
                layer_norm_epsilon=layer_norm_epsilon, activation_dropout=0.0,
                name=f"encoder_block_{i}")(x, attention_mask=inputs["padding_mask"])
        sequence = x
        pooler = layers.Dense(hidden_dim, activation="tanh", name="pooler")
        head = lambda units: layers.Dense(units, name="head", dtype="float32")
        if task is None:
            outputs = {"sequence_output": sequence,
                       "pooled_output": pooler(FirstToken(name="cls_token")(sequence))}
        elif task in ("pretraining", "masked_lm"):
            inputs["mask_positions"] = keras.Input((max_predictions_per_seq,), dtype="int32",
                                                   name="mask_positions")
            h = GatherPositions(name="mlm_gather")(sequence, inputs["mask_positions"])
            h = MaskedLMTransform(layer_norm_epsilon, hidden_act, name="mlm_transform")(h)
            mlm = OutputBias(name="mlm_output_bias")(token_embedding(h, reverse=True))
            outputs = {"mlm": mlm}
            if task == "pretraining":
                pooled = pooler(FirstToken(name="cls_token")(sequence))
                outputs["nsp"] = layers.Dense(2, name="nsp_head", dtype="float32")(pooled)
        elif task == "classification":
            pooled = pooler(FirstToken(name="cls_token")(sequence))
            outputs = head(num_classes)(layers.Dropout(dropout, name="head_dropout")(pooled))
        elif task == "token_classification":
            outputs = head(num_classes)(layers.Dropout(dropout, name="head_dropout")(sequence))
        else:  # question_answering: run_squad.py's cls/squad/output_weights
            logits = head(2)(sequence)
            outputs = {"start_logits": layers.Identity(name="start_logits")(logits[..., 0]),
                       "end_logits": layers.Identity(name="end_logits")(logits[..., 1])}
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        _truncated_normal_init(self, initializer_range)

    tokenizer_hint = " (keras_zoo.data.tokenizers.WordPieceTokenizer)"

    # ---- inputs

    def __call__(self, inputs, *args, **kwargs):
        return super().__call__(self._complete_inputs(inputs), *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        if isinstance(x, dict):
            x = self._complete_inputs(x)
        return super().predict(x, *args, **kwargs)

    def _check_input_shape(self, inputs):
        """Shapes are checked in ``_complete_inputs`` (dict inputs)."""

    def _complete_inputs(self, inputs):
        """Fills default segment ids / padding mask, and fails in one line on
        wrong keys, sequences past the position table and ids outside the
        vocabulary or the segment table (when the values are at hand)."""
        c = self.get_zoo_config()
        if not isinstance(inputs, dict):
            raise TypeError(
                f"BERT takes a dict of {list(INPUTS)} (+ mask_positions for pre-training), "
                f"each (batch, length) int32; got {type(inputs).__name__}")
        needed = list(INPUTS) + (["mask_positions"] if c["task"] in ("pretraining", "masked_lm")
                                 else [])
        unknown = sorted(set(inputs) - set(needed))
        if unknown or "token_ids" not in inputs:
            raise ValueError(f"BERT inputs are {needed}; got {sorted(inputs)}")
        if "mask_positions" in needed and "mask_positions" not in inputs:
            raise ValueError(f"a {c['task']} BERT needs mask_positions (batch, "
                             f"{c['max_predictions_per_seq']})")
        ids = inputs["token_ids"]
        if len(ids.shape) != 2:
            raise ValueError(f"token_ids must be (batch, length); got shape {tuple(ids.shape)}")
        if ids.shape[1] is not None and ids.shape[1] > c["max_sequence_length"]:
            raise ValueError(
                f"a sequence of {ids.shape[1]} tokens is longer than the position table "
                f"(max_sequence_length={c['max_sequence_length']}); truncate it or split it "
                "into windows")
        inputs = dict(inputs)
        if "segment_ids" not in inputs:
            inputs["segment_ids"] = ops.zeros_like(ids)
        if "padding_mask" not in inputs:
            inputs["padding_mask"] = ops.ones_like(ids)
        check_token_ids(inputs["token_ids"], c["vocab_size"])
        _check_range(inputs["segment_ids"], c["num_segments"], "segment ids", "segment table")
        _check_consistent(inputs, ids.shape[1])
        # One kind of value per call (Keras refuses a mix of arrays and tensors).
        return {k: v if keras.backend.is_keras_tensor(v) else ops.convert_to_tensor(v, "int32")
                for k, v in inputs.items()}

    # ---- data (the trainer's hooks)

    @property
    def task(self):
        return self.get_zoo_config()["task"]

    @property
    def batches_per_pass_exact(self):
        # Pre-training pairs segments at random: the instances per pass vary.
        return self.task != "pretraining"

    def data_task(self):
        from keras_zoo.data import text

        need = {"pretraining": text.DOCUMENTS, "classification": text.CLASSIFICATION}
        if self.task not in need:
            raise ValueError(f"experiments.train trains BERT with task='pretraining' "
                             f"(documents) or 'classification' (labelled text); this model "
                             f"has task={self.task!r}")
        return need[self.task]

    def data_owner(self):
        return f"BERT(task={self.task!r})"

    def synthetic_examples(self, n, rng):
        """Random packed instances of the training shape (dry runs, throughput)."""
        c = self.get_zoo_config()
        length = c["sequence_length"]
        ids = rng.integers(5, c["vocab_size"], (n, length)).astype("int32")
        ids[:, 0], ids[:, length // 2], ids[:, -1] = 2, 3, 3  # [CLS] A [SEP] B [SEP]
        segments = np.zeros((n, length), "int32")
        segments[:, length // 2 + 1:] = 1
        columns = {"token_ids": ids, "segment_ids": segments,
                   "lengths": np.full(n, length, "int32"),
                   "label": rng.integers(0, 2 if self.task == "pretraining"
                                         else c["num_classes"], n).astype("int32")}
        task = "documents" if self.task == "pretraining" else "classification"
        return columns, task, {"num_classes": c["num_classes"],
                               "example_bytes": 3 * ids[0].nbytes}

    def prepare_data(self, examples, info, work_dir=None):
        """Trains a WordPiece vocabulary of ``vocab_size`` on the training texts
        when the model has no tokenizer (kept in ``work_dir/tokenizer`` for a
        resumed run), and for pre-training counts the instances of one pass
        (another shuffle pairs other documents: the count varies a little)."""
        from keras_zoo.data.tokenizers import WordPieceTokenizer

        if "token_ids" in examples.element_spec:
            return
        self.run_tokenizer(work_dir, lambda: WordPieceTokenizer.train(
            [t.decode("utf-8") for t in examples.map(lambda e: e["text"]).as_numpy_iterator()],
            vocab_size=self.get_zoo_config()["vocab_size"]))
        if self.task == "pretraining":  # how many instances one pass makes (about)
            vars(self)["_zoo_pass_instances"] = sum(
                int(b[0].shape[0]) for b in self._instances(examples).batch(4096))

    def steps_per_pass(self, info, batch_size):
        instances = vars(self).get("_zoo_pass_instances")
        if self.task == "pretraining" and instances is not None:
            return instances // batch_size or None
        return (info.num_examples or 0) // batch_size or None

    def batch_data(self, examples, info, batch_size, training):
        if self.task == "pretraining":
            return self._pretraining_batches(examples, batch_size, training)
        if self.task == "classification":
            return self._classification_batches(examples, batch_size, training)
        if self.task == "token_classification":
            return self._token_classification_batches(examples, batch_size, training)
        raise ValueError("question answering trains on SQuAD-style features: see "
                         "keras_zoo.data.squad.make_features and BERT.answer")

    def _special_ids(self):
        t = self.tokenizer
        if t is None:  # synthetic data: the ids the synthetic instances use
            return {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}, \
                self.get_zoo_config()["vocab_size"]
        return {r: t.special_id(r) for r in ("pad", "unk", "cls", "sep", "mask")}, t.vocab_size

    def _instances(self, examples):
        """Documents -> sentences -> ids -> NSP instances, made in groups of 16
        documents (B of a random pair comes from another document of the group):
        (token_ids, segment_ids, lengths, next_sentence_labels) per instance."""
        import tensorflow as tf

        from keras_zoo.data import bert_pretraining as bp

        c = self.get_zoo_config()
        special, _ = self._special_ids()
        length = c["sequence_length"]
        if "token_ids" in examples.element_spec:  # synthetic instances
            return examples.map(lambda e: (e["token_ids"], e["segment_ids"], e["lengths"],
                                           e["label"]))
        tokenizer = self._require_tokenizer("pre-training")

        def create(values, segment_lengths, document_lengths, seed):
            docs, start, seg = [], 0, 0
            for n_segments in document_lengths:
                doc = []
                for n in segment_lengths[seg:seg + n_segments]:
                    doc.append(values[start:start + n])
                    start += n
                seg += n_segments
                docs.append(doc)
            return bp.create_instances(docs, length, c["short_seq_prob"], special["cls"],
                                       special["sep"], special["pad"], seed)

        def make(texts):
            segments = bp.split_segments(texts)  # (documents, sentences)
            ids = tokenizer.tf_encode(segments.flat_values)  # (sentences, tokens)
            # The pairing is drawn from the group's own text: the same documents
            # give the same pairs, another shuffle gives other groups.
            seed = tf.strings.to_hash_bucket_fast(tf.strings.reduce_join(texts), 2**31)
            out = tf.numpy_function(
                create, [ids.flat_values, ids.row_lengths(), segments.row_lengths(), seed],
                [tf.int32, tf.int32, tf.int32, tf.int32], stateful=False)
            shapes = [(None, length), (None, length), (None,), (None,)]
            return tf.data.Dataset.from_tensor_slices(
                tuple(tf.ensure_shape(o, s) for o, s in zip(out, shapes)))

        return examples.map(lambda e: e["text"]).batch(16).flat_map(make)

    def _pretraining_batches(self, examples, batch_size, training):
        """NSP instances -> shuffled -> batches -> masked-LM corruption.
        ``(x, y, sample_weight)`` with y = {"mlm": the original ids at
        ``mask_positions``, "nsp": 1 for a random B}; evaluation pads the last
        batch with weight-0 rows."""
        import tensorflow as tf

        from keras_zoo.data import bert_pretraining as bp

        c = self.get_zoo_config()
        special, vocab = self._special_ids()
        length = c["sequence_length"]
        instances = self._instances(examples)
        if training:
            instances = instances.shuffle(4096, seed=17)
        batches = instances.batch(batch_size, drop_remainder=training)
        masked_ids = [special["cls"], special["sep"], special["pad"]]

        def corrupt(index, batch):
            token_ids, segment_ids, lengths, labels = batch
            if not training:
                token_ids, segment_ids, lengths, labels, weight = _pad_to(
                    batch_size, token_ids, segment_ids, lengths, labels)
            else:
                weight = tf.ones((batch_size,), tf.float32)
            content = tf.reduce_sum(tf.cast(token_ids[:, :8], tf.int64)
                                    * tf.range(1, 9, dtype=tf.int64))
            masked = bp.mask_tokens(token_ids, lengths, tf.stack([index, content]), vocab,
                                    special["mask"], masked_ids,
                                    c["max_predictions_per_seq"], c["masked_lm_prob"])
            padding = tf.cast(tf.range(length)[None, :] < lengths[:, None], tf.int32)
            x = {"token_ids": masked["token_ids"], "segment_ids": segment_ids,
                 "padding_mask": padding, "mask_positions": masked["mask_positions"]}
            y = {"mlm": masked["mask_ids"], "nsp": labels}
            sw = {"mlm": masked["mask_weights"] * weight[:, None], "nsp": weight}
            return x, y, sw

        return batches.enumerate().map(corrupt, num_parallel_calls=tf.data.AUTOTUNE)

    def pack(self, first, second=None):
        """Ragged ids (B, None) [and (B, None)] -> ``token_ids``, ``segment_ids``,
        ``padding_mask`` (B, sequence_length): ``[CLS] A [SEP]`` or
        ``[CLS] A [SEP] B [SEP]``, cut from the end of the longer of A and B
        first (run_classifier.py's _truncate_seq_pair). TensorFlow ops."""
        import tensorflow as tf

        special, _ = self._special_ids()
        length = self.get_zoo_config()["sequence_length"]
        first = tf.cast(first, tf.int32)
        cls = tf.fill([first.nrows(), 1], special["cls"])
        sep = tf.fill([first.nrows(), 1], special["sep"])
        if second is None:
            pieces = [cls, _head(first, length - 2), sep]
            segments = [0, 0, 0]
        else:
            second = tf.cast(second, tf.int32)
            la, lb = first.row_lengths(), second.row_lengths()
            budget = tf.constant(length - 3, la.dtype)
            keep_b = tf.minimum(lb, tf.maximum(budget // 2, budget - la))
            keep_a = tf.minimum(la, budget - keep_b)
            pieces = [cls, _head(first, keep_a), sep, _head(second, keep_b), sep]
            segments = [0, 0, 0, 1, 1]
        pieces = [tf.RaggedTensor.from_tensor(p) if isinstance(p, tf.Tensor) else p
                  for p in pieces]
        tokens = tf.concat(pieces, axis=1)
        segment_ids = tf.concat([tf.ones_like(p) * s for p, s in zip(pieces, segments)], 1)
        shape = [None, length]
        return {"token_ids": tokens.to_tensor(special["pad"], shape=shape),
                "segment_ids": segment_ids.to_tensor(0, shape=shape),
                "padding_mask": tf.ones_like(tokens).to_tensor(0, shape=shape)}

    def _classification_batches(self, examples, batch_size, training):
        """{"text"[, "text_pair"], "label"} -> packed ids; ``(x, label, weight)``;
        evaluation pads the last batch with weight-0 rows."""
        import tensorflow as tf

        spec = examples.element_spec
        if "token_ids" in spec:  # synthetic instances
            def packed(batch):
                padding = tf.cast(tf.range(batch["token_ids"].shape[1])[None, :]
                                  < batch["lengths"][:, None], tf.int32)
                return ({"token_ids": batch["token_ids"], "segment_ids": batch["segment_ids"],
                         "padding_mask": padding}, batch["label"])
        else:
            tokenizer = self._require_tokenizer("fine-tuning on text")

            def packed(batch):
                first = tokenizer.tf_encode(batch["text"])
                second = tokenizer.tf_encode(batch["text_pair"]) if "text_pair" in spec \
                    else None
                return self.pack(first, second), tf.cast(batch["label"], tf.int32)

        batches = examples.batch(batch_size, drop_remainder=training).map(
            packed, num_parallel_calls=tf.data.AUTOTUNE)
        if training:
            return batches

        def pad(x, y):
            token_ids, segment_ids, padding, y, weight = _pad_to(
                batch_size, x["token_ids"], x["segment_ids"], x["padding_mask"], y)
            return ({"token_ids": token_ids, "segment_ids": segment_ids,
                     "padding_mask": padding}, y, weight)

        return batches.map(pad)

    def _token_classification_batches(self, examples, batch_size, training):
        """{"words": (n,) strings, "tags": (n,) ints} -> pieces with the tag on
        each word's first piece (weight 1) and weight 0 elsewhere."""
        import tensorflow as tf

        tokenizer = self._require_tokenizer("token classification")
        special, _ = self._special_ids()
        length = self.get_zoo_config()["sequence_length"]

        def encode(example):
            pieces = tokenizer.tf_encode(example["words"])  # (words, pieces)
            first = tf.ragged.range(pieces.row_lengths()) == 0
            tags = tf.ones_like(pieces) * tf.cast(example["tags"], tf.int32)[:, None]
            tags = tf.where(first, tags, -1)
            ids = tf.concat([[special["cls"]], pieces.flat_values[:length - 2],
                             [special["sep"]]], 0)
            labels = tf.concat([[-1], tags.flat_values[:length - 2], [-1]], 0)
            pad = length - tf.shape(ids)[0]
            ids = tf.pad(ids, [[0, pad]], constant_values=special["pad"])
            labels = tf.pad(labels, [[0, pad]], constant_values=-1)
            x = {"token_ids": ids, "segment_ids": tf.zeros_like(ids),
                 "padding_mask": tf.cast(tf.range(length) < length - pad, tf.int32)}
            return x, tf.maximum(labels, 0), tf.cast(labels >= 0, tf.float32)

        batches = examples.map(encode).batch(batch_size, drop_remainder=True)
        return batches

    def compile_defaults(self):
        task = self.task
        ce = lambda: keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight")
        accuracy = lambda name="accuracy": keras.metrics.SparseCategoricalAccuracy(
            name=name)
        if task == "pretraining":
            # run_pretraining.py: masked-LM loss averaged over the real
            # predictions (weights), plus the next-sentence loss.
            return {"loss": {"mlm": ce(), "nsp": ce()},
                    "metrics": {"mlm": [accuracy()], "nsp": [accuracy()]}}
        if task == "masked_lm":
            return {"loss": {"mlm": ce()}, "metrics": {"mlm": [accuracy()]}}
        if task == "question_answering":
            # run_squad.py: the mean of the start and end position losses.
            return {"loss": {"start_logits": ce(), "end_logits": ce()},
                    "loss_weights": {"start_logits": 0.5, "end_logits": 0.5},
                    "metrics": {"start_logits": [accuracy()], "end_logits": [accuracy()]}}
        if task is None:
            return {"loss": None, "metrics": None}
        return {"loss": ce(), "metrics": [accuracy()]}

    # ---- export

    def serving_signatures(self):
        """The model at a static length (``sequence_length``): TFLite wants static shapes."""
        return {"serving_default": self._static_length(self, self.name)}

    def export_signatures(self):
        signatures = super().export_signatures()
        if "embedding" in signatures:
            signatures["embedding"] = self._static_length(signatures["embedding"],
                                                          f"{self.name}_embedding")
        return signatures

    def _static_length(self, fn, name):
        length = self.get_zoo_config()["sequence_length"]
        inputs = {t.name: keras.Input((t.shape[1] or length,), dtype="int32", name=t.name)
                  for t in self.inputs}
        outputs = fn(inputs)
        if isinstance(outputs, dict):  # named outputs, in a fixed order
            outputs = [layers.Identity(name=k)(v) for k, v in sorted(outputs.items())]
        return keras.Model(inputs, outputs, name=name)

    # ---- embeddings and MediaPipe

    # MediaPipe's BertPreprocessor finds its three int32 inputs by these
    # metadata names (mediapipe/calculators/tensor/bert_preprocessor_calculator.cc).
    MEDIAPIPE_TASKS: ClassVar[dict] = {"serving_default": "text_classifier",
                                       "embedding": "text_embedder"}
    MEDIAPIPE_INPUT_NAMES: ClassVar[dict] = {"token_ids": "ids", "padding_mask": "mask",
                                             "segment_ids": "segment_ids"}

    def mediapipe_tasks(self):
        """A classifier's logits run in MediaPipe's TextClassifier; its
        ``embedding`` (and the backbone's) in TextEmbedder."""
        tasks = {"serving_default": "text_classifier"} if self.task == "classification" else {}
        if self.embedding_kinds():
            tasks["embedding"] = "text_embedder"
        return tasks

    def embedding_kinds(self):
        """``"pooled"``: the pooler's tanh(dense([CLS])), what the classifier
        head reads (where the task has a pooler); ``"mean"``: the mean of the
        final token vectors over the padding mask."""
        pooled = self.task in (None, "pretraining", "classification")
        return ("pooled", "mean") if pooled else ("mean",)

    def embedding_model(self, kind=None):
        kind = self._embedding_kind(kind)
        if kind == "pooled":
            build = lambda: self.get_layer("pooler").output
        else:
            build = lambda: MaskedMean(name="mean_embedding")(
                self.get_layer(f"encoder_block_{self.get_zoo_config()['num_layers'] - 1}")
                .output, self.input["padding_mask"])
        return self._embedding_from(kind, self.input, build)

    def representative_inputs(self, spec, split, num_samples, signature="serving_default"):
        """Calibration/verification inputs from a labelled text spec: packed ids and
        their labels. None (the exporter's own data) for other specs or tasks."""
        from keras_zoo.data import text

        if self.task != "classification" or self.tokenizer is None \
                or not text.is_text_spec(spec):
            return None
        examples, info = text.load(spec, split)
        if info.task != text.CLASSIFICATION:
            return None
        x, y, _ = next(iter(self._classification_batches(
            examples.take(num_samples), num_samples, training=False)))
        n = min(num_samples, info.num_examples or num_samples)
        return {k: v.numpy()[:n] for k, v in x.items()}, y.numpy()[:n]

    # ---- question answering

    def answer(self, questions, contexts, max_answer_length=30, doc_stride=128,
               max_query_length=64, batch_size=32):
        """The best answer span of each (question, context), as text (run_squad.py's
        windows and decoding; keras_zoo.data.squad)."""
        from keras_zoo.data import squad

        if self.task != "question_answering":
            raise ValueError(f"answer() needs task='question_answering'; this BERT has "
                             f"task={self.task!r}")
        tokenizer = self._require_tokenizer("answering questions")
        single = isinstance(questions, str)
        questions, contexts = ([questions], [contexts]) if single else (questions, contexts)
        if len(questions) != len(contexts):
            raise ValueError(f"{len(questions)} questions for {len(contexts)} contexts")
        for what, items in (("question", questions), ("context", contexts)):
            bad = [type(t).__name__ for t in items if not isinstance(t, str)]
            if bad:
                raise TypeError(f"answer() takes each {what} as a string; got {bad[0]} (give "
                                f"lists of questions and contexts, one string each)")
        for name, value in (("doc_stride", doc_stride), ("max_answer_length", max_answer_length),
                            ("max_query_length", max_query_length), ("batch_size", batch_size)):
            check_count(name, value)  # doc_stride <= 0 would never advance the window
        length = self.get_zoo_config()["sequence_length"]
        answers = []
        for question, context in zip(questions, contexts):
            features = squad.make_features(tokenizer, question, context, length,
                                           max_query_length, doc_stride)
            x = {k: np.array([f[k] for f in features], "int32") for k in INPUTS}
            out = self.predict(x, batch_size=batch_size, verbose=0)
            best = squad.best_span(out["start_logits"], out["end_logits"], features,
                                   max_answer_length)
            answers.append("" if best is None else
                           squad.span_text(tokenizer, features[best[1]], best[2], best[3]))
        return answers[0] if single else answers


# ---------------------------------------------------------------- helpers

def _truncated_normal_init(model, stddev):
    """modeling.py's create_initializer: every matrix and embedding table drawn
    from N(0, stddev^2) truncated at 2 sigma (biases zero, LayerNorm 1 and 0),
    each variable independently: a fresh initializer per variable (an unseeded
    Keras initializer object has a fixed seed, so one object reused would give
    equal kernels and a position table equal to the first rows of the token
    table). The seeds come from Python's ``random``: ``keras.utils.set_random_seed``
    makes a build reproducible."""
    for v in model.weights:
        if v.path.endswith(("kernel", "embeddings")):
            v.assign(keras.initializers.TruncatedNormal(stddev=stddev)(v.shape, v.dtype))


def _check_range(values, size, what, table):
    """One clear error for ids outside a table, when the values are concrete."""
    if keras.backend.is_keras_tensor(values):
        return
    try:
        values = np.asarray(values)
    except Exception:  # noqa: BLE001  (a symbolic tensor of a traced function: no values)
        return
    if values.dtype == object or not values.size:
        return
    bad = values[(values < 0) | (values >= size)]
    if bad.size:
        raise ValueError(f"{what} {sorted(set(bad.tolist()))[:5]} are outside the {table} "
                         f"(0..{size - 1})")


def _check_consistent(inputs, length):
    """Concrete inputs agree in shape (no broadcasting one example's segments or
    mask over a batch), the padding mask is 0/1 and mask_positions index the
    sequence."""
    shapes = {k: tuple(v.shape) for k, v in inputs.items() if hasattr(v, "shape")}
    ids_shape = shapes.get("token_ids")
    for key in ("segment_ids", "padding_mask"):
        if key in shapes and None not in shapes[key] + ids_shape and \
                shapes[key] != ids_shape:
            raise ValueError(f"BERT {key} has shape {shapes[key]} but token_ids has "
                             f"{ids_shape}: give one row per example, of the same length")
    if "mask_positions" in shapes and shapes["mask_positions"][:1] != ids_shape[:1] and \
            None not in shapes["mask_positions"][:1] + ids_shape[:1]:
        raise ValueError(f"BERT mask_positions has {shapes['mask_positions'][0]} rows but "
                         f"token_ids has {ids_shape[0]}")
    mask = inputs["padding_mask"]
    if not keras.backend.is_keras_tensor(mask):
        try:
            values = np.asarray(mask)
        except Exception:  # noqa: BLE001  (symbolic)
            values = None
        if values is not None and values.size and not np.isin(values, (0, 1)).all():
            odd = sorted(set(values[~np.isin(values, (0, 1))].tolist()))[:3]
            raise ValueError(f"BERT padding_mask must be 0 (padding) or 1 (token); got {odd}")
    if "mask_positions" in inputs and length is not None:
        _check_range(inputs["mask_positions"], length, "mask_positions", "sequence")


def _head(ragged, keep):
    """The first ``keep`` (scalar or per row) items of each row of a RaggedTensor."""
    import tensorflow as tf

    positions = tf.ragged.range(ragged.row_lengths())
    keep = tf.cast(keep, positions.dtype)
    if keep.shape.rank == 1:
        keep = keep[:, None]
    return tf.ragged.boolean_mask(ragged, positions < keep)


def _pad_to(batch_size, *tensors):
    """Pads a partial batch with zero rows to ``batch_size``; returns the
    tensors and a weight per row (1 real, 0 padding)."""
    import tensorflow as tf

    n = tf.shape(tensors[0])[0]
    padded = []
    for t in tensors:
        pad = [[0, batch_size - n]] + [[0, 0]] * (len(t.shape) - 1)
        padded.append(tf.ensure_shape(tf.pad(t, pad), [batch_size] + t.shape[1:].as_list()))
    weight = tf.cast(tf.range(batch_size) < n, tf.float32)
    return (*padded, weight)


# ---------------------------------------------------------------- presets

def _bert(hidden, layers_, heads, **extra):
    return dict(hidden_dim=hidden, num_layers=layers_, num_heads=heads,
                intermediate_dim=4 * hidden, **extra)


register_preset("bert_tiny", "BERT", _bert(128, 2, 2),
                "BERT-Tiny (Turc et al. 2019): 2 blocks, width 128, 2 heads, vocabulary 30,522")
register_preset("bert_base_uncased", "BERT", _bert(768, 12, 12),
                "BERT-Base uncased: 12 blocks, width 768, 12 heads, 109,482,240 parameters")
register_preset("bert_large_uncased", "BERT", _bert(1024, 24, 16),
                "BERT-Large uncased: 24 blocks, width 1024, 16 heads, 335,141,888 parameters")
register_preset("bert_tiny_pretraining", "BERT",
                _bert(128, 2, 2, vocab_size=8192, task="pretraining"),
                "BERT-Tiny with masked-LM + NSP heads and an 8,192-token vocabulary "
                "(trains on english_prose in minutes)", tiny=True)
register_preset("bert_tiny_classifier", "BERT",
                _bert(128, 2, 2, vocab_size=8192, task="classification", num_classes=8),
                "BERT-Tiny sequence classifier with an 8,192-token vocabulary", tiny=True)
