"""Writes the Hugging Face BERT fixtures of tests/converters/test_hf_bert.py.

    /work/torchenv/bin/python tools/make_hf_fixtures_bert.py          # (re)write them
    /work/torchenv/bin/python tools/make_hf_fixtures_bert.py --check  # re-check them

Needs torch + transformers; the tests do not. Tiny checkpoints with random
weights (2 blocks, width 32, 4 heads, 40 positions, a 128-token
``vocab.txt``), saved by ``save_pretrained`` into tests/fixtures/hf_bert/<name>/:

* ``model``: a ``BertModel`` (keys without prefix, pooler included);
* ``pretraining``: a ``BertForPreTraining`` (``bert.`` prefix, masked-LM
  head tied to the word embeddings, NSP head);
* ``legacy``: the same ``BertForPreTraining`` rewritten as older files are:
  LayerNorm parameters named ``gamma``/``beta``, the ``position_ids``
  buffer stored, and the tied decoder matrix saved as its own tensor;
* ``masked_lm``: a ``BertForMaskedLM`` (no pooler, no next-sentence head);
* ``sequence_classification``: a ``BertForSequenceClassification`` with three
  named labels (``id2label``) and ``layer_norm_eps=1e-7``;
* ``token_classification``: a ``BertForTokenClassification`` with five
  labels and other sizes (2 heads, feed-forward 48, 24 positions, 3 segments);
* ``question_answering``: a ``BertForQuestionAnswering``.

LayerNorm scales and every bias are perturbed away from their initial
values (ones, zeros) so that a converter that skips or swaps one of them
fails the parity test. ``reference.npz`` holds inputs (token ids with
padding, segment ids, attention mask), the last hidden states, the pooled
output, for pre-training the MLM and NSP logits, and the ids Hugging Face's
BertTokenizer gives a few tricky strings. (Not Greek capitals: transformers'
Rust normalizer lower-cases letter by letter, "ΣΑΣ" -> "σασ", where the
original tokenization.py's ``str.lower`` writes the final sigma, "σας".)
"""

import argparse
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "hf_bert")
VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
         + list("abcdefghijklmnopqrstuvwxyz0123456789")
         + list(".,!?;:'\"()-#$%&*/[]")
         + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
         + ["the", "un", "##aff", "##able", "hello", "world", "cafe", "naive", "token",
            "##izer", "##s", "##ing", "bert", "中", "文", "ω", "##ω", "ß", "ж", "##ж", "é",
            "istanbul", "σας"])
VOCAB += [f"[unused{i}]" for i in range(128 - len(VOCAB))]
TEXTS = ["Hello, WORLD!! naïve café", "unaffable tokenizers: 中文 ΩΩ", "İstanbul ß",
         "a\x00b\ufffdc\u200bd e\tf", "xyz qqq bert's 42", "ж" * 150, "ж" * 90]
CONFIG = {"vocab_size": len(VOCAB), "hidden_size": 32, "num_hidden_layers": 2,
          "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 40,
          "type_vocab_size": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
          "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}


# name -> (transformers class, config changes, seed)
HEADS = {
    "masked_lm": ("BertForMaskedLM", {}, 3),
    "sequence_classification": ("BertForSequenceClassification", {
        "layer_norm_eps": 1e-7, "id2label": {0: "negative", 1: "neutral", 2: "positive"},
        "label2id": {"negative": 0, "neutral": 1, "positive": 2}}, 4),
    "token_classification": ("BertForTokenClassification", {
        "num_labels": 5, "num_attention_heads": 2, "intermediate_size": 48,
        "max_position_embeddings": 24, "type_vocab_size": 3}, 5),
    "question_answering": ("BertForQuestionAnswering", {}, 6),
}


def build(kind, seed):
    import torch
    import transformers
    from transformers import BertConfig, BertForPreTraining, BertModel

    torch.manual_seed(seed)
    if kind in HEADS:
        config = BertConfig(**{**CONFIG, **HEADS[kind][1]})
        model = getattr(transformers, HEADS[kind][0])(config).eval()
    else:
        config = BertConfig(**CONFIG)
        model = (BertModel(config) if kind == "model" else BertForPreTraining(config)).eval()
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "LayerNorm.weight" in key:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif key.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
    return model


def inputs(seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, len(VOCAB), (2, 12)).astype("int64")
    ids[:, 0], ids[:, 5], ids[:, -1] = 2, 3, 3
    mask = np.ones_like(ids)
    ids[1, 8:], mask[1, 8:] = 0, 0
    ids[1, 7] = 3
    segments = np.zeros_like(ids)
    segments[:, 6:] = 1
    segments[1, 8:] = 0
    return {"input_ids": ids, "token_type_ids": segments, "attention_mask": mask}


def reference(model, kind, seed):
    import torch
    from transformers import BertTokenizer

    x = inputs(seed)
    with torch.no_grad():
        if kind == "model":
            out = model(**{k: torch.from_numpy(v) for k, v in x.items()})
            result = {"hidden": out.last_hidden_state.numpy(), "pooled": out.pooler_output.numpy()}
        elif kind in HEADS:
            out = model(**{k: torch.from_numpy(v) for k, v in x.items()})
            if kind == "question_answering":
                result = {"start_logits": out.start_logits.numpy(),
                          "end_logits": out.end_logits.numpy()}
            else:
                result = {"logits": out.logits.numpy()}
        else:
            out = model(**{k: torch.from_numpy(v) for k, v in x.items()},
                        output_hidden_states=True)
            result = {"hidden": out.hidden_states[-1].numpy(),
                      "mlm_logits": out.prediction_logits.numpy(),
                      "nsp_logits": out.seq_relationship_logits.numpy()}
    tokenizer = BertTokenizer(os.path.join(OUT, "vocab.txt"), do_lower_case=True)
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in TEXTS]
    width = max(map(len, ids))
    return {**x, **{k: v.astype("float32") for k, v in result.items()},
            "text_ids": np.array([i + [-1] * (width - len(i)) for i in ids], "int64")}


def legacy(folder):
    """Rewrites ``folder``'s safetensors the way older checkpoints name things."""
    from safetensors.numpy import load_file, save_file

    path = os.path.join(folder, "model.safetensors")
    tensors = load_file(path)
    renamed = {}
    for key, value in tensors.items():
        key = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta")
        renamed[key] = value
    renamed["bert.embeddings.position_ids"] = np.arange(CONFIG["max_position_embeddings"],
                                                        dtype="int64")[None]
    renamed["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"]
    save_file(renamed, path, metadata={"format": "pt"})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="load the committed folders with transformers and compare")
    args = parser.parse_args()
    import torch
    from transformers import BertForPreTraining, BertModel

    os.makedirs(OUT, exist_ok=True)
    if not args.check:
        with open(os.path.join(OUT, "vocab.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(VOCAB) + "\n")
    import transformers

    for i, name in enumerate(("model", "pretraining", "legacy", *HEADS)):
        folder = os.path.join(OUT, name)
        kind = name if name in ("model", *HEADS) else "pretraining"
        if name in HEADS:
            i = HEADS[name][2]
        if args.check:
            cls = (getattr(transformers, HEADS[kind][0]) if kind in HEADS
                   else BertModel if kind == "model" else BertForPreTraining)
            model = cls.from_pretrained(folder).eval()
            saved = dict(np.load(os.path.join(OUT, name, "reference.npz")))
            again = reference(model, kind, seed=i if name != "legacy" else 1)
            for key, value in saved.items():
                diff = np.abs(again[key].astype("float64") - value).max()
                print(f"{name}/{key}: max |diff| {diff:.2e}")
                if diff > 1e-5:
                    raise SystemExit(f"{name}: the committed fixture does not match transformers")
            continue
        os.makedirs(folder, exist_ok=True)
        model = build(kind, seed=i if name != "legacy" else 1)
        model.save_pretrained(folder, safe_serialization=True)
        for extra in ("vocab.txt",):
            with open(os.path.join(OUT, extra), "rb") as src, \
                    open(os.path.join(folder, extra), "wb") as dst:
                dst.write(src.read())
        with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
            json.dump({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}, f)
        np.savez(os.path.join(folder, "reference.npz"),
                 **reference(model, kind, seed=i if name != "legacy" else 1))
        if name == "legacy":
            legacy(folder)
        sizes = {f: os.path.getsize(os.path.join(folder, f)) for f in sorted(os.listdir(folder))}
        print(name, sizes, torch.__version__)


if __name__ == "__main__":
    main()
