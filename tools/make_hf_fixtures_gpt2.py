"""Writes the Hugging Face GPT-2 fixture of tests/converters/test_hf_gpt2.py.

    /work/torchenv/bin/python tools/make_hf_fixtures_gpt2.py          # (re)write it
    /work/torchenv/bin/python tools/make_hf_fixtures_gpt2.py --check  # re-check it

Needs torch + transformers + tokenizers; the tests need none of them. Into
tests/fixtures/hf_gpt2/ it writes:

* a byte-level BPE vocabulary in GPT-2's format (``vocab.json`` +
  ``merges.txt``, ~300 pieces, trained here on the text below with
  ``<|endoftext|>`` as its last id, like GPT-2's 50256);
* a tiny ``GPT2LMHeadModel`` (width 32, 2 blocks, 4 heads, 64 positions)
  with random weights, saved by ``save_pretrained`` (config.json +
  model.safetensors). LayerNorm weights and biases and every bias are
  perturbed away from their initial ones and zeros, and the projections
  are scaled up so that the blocks, not the embeddings alone, pick the next
  token: a converter that skipped, transposed or mis-split any of them
  fails the parity test;
* ``reference.npz``: input ids and their logits, a prompt ("Hello" as
  GPT2TokenizerFast encodes it) and 12 greedy tokens from ``generate``
  (with transformers' key/value cache);
* ``tokenizer_reference.json``: texts and the ids GPT2TokenizerFast gives
  them (contractions, runs of spaces, newlines, digits, non-Latin text,
  emoji, the special token), for the tokenizer tests.
"""

import argparse
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "hf_gpt2")
TRAIN_TEXT = (
    "Hello, world! The parser reads one token at a time and returns the number of items. "
    "It's a function that doesn't raise; we'll see what they've done. I'm sure you'd agree. "
    "Return a new array of given shape and type, filled with zeros. The default is None. "
    "Values 0, 1, 2, 10 and 2024 are integers; 3.14 is a float. Hello again.\n\n"
) * 20
TEXTS = [
    "Hello",
    "Hello, world!",
    "It's what they've done; we'll see, I'm sure you'd agree.",
    "  leading spaces and   runs   of spaces   ",
    "tabs\tand\nnew lines\n\n  indented",
    "numbers 12345 and 3.14159, 2024-11-27",
    "Ünïcödé façade, naïve café — ½ ∑ 日本語 테스트",
    "emoji 🙂👍 and symbols @#$%^&*()[]{}",
    "two documents<|endoftext|>joined by the end token",
    "",
]


def tokenizer_files(folder):
    """vocab.json + merges.txt of a 400-piece byte-level BPE (GPT-2 format)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=399, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([TRAIN_TEXT], trainer)
    vocab = tokenizer.get_vocab()
    vocab["<|endoftext|>"] = len(vocab)  # the last id, as in GPT-2
    merges = [" ".join(pair) for pair in json.loads(tokenizer.to_str())["model"]["merges"]]
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(dict(sorted(vocab.items(), key=lambda kv: kv[1])), f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return len(vocab)


def hf_tokenizer(folder):
    from transformers import GPT2TokenizerFast

    return GPT2TokenizerFast.from_pretrained(folder)  # reads vocab.json + merges.txt


def build(vocab_size, seed=0):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                        bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif key.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif key.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight", "wpe.weight")):
                p.mul_(5.0)
    return model


def reference(model, tokenizer, seed=0):
    import torch

    rng = np.random.default_rng(seed)
    input_ids = rng.integers(0, model.config.vocab_size, (2, 16)).astype("int64")
    prompt = np.array([tokenizer.encode("Hello")], "int64")
    with torch.no_grad():
        logits = model(torch.from_numpy(input_ids)).logits.numpy()
        greedy = model.generate(torch.from_numpy(prompt), max_new_tokens=12, do_sample=False,
                                min_new_tokens=12, pad_token_id=0,
                                attention_mask=torch.ones_like(torch.from_numpy(prompt)))
    return {"input_ids": input_ids, "logits": logits.astype("float32"), "prompt": prompt,
            "greedy": greedy.numpy()[:, prompt.shape[1]:]}


def tokenizer_reference(tokenizer):
    return {"texts": TEXTS, "ids": [tokenizer.encode(t) for t in TEXTS]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="load the committed folder with transformers and compare")
    args = parser.parse_args()
    import torch
    from transformers import GPT2LMHeadModel

    if args.check:
        model = GPT2LMHeadModel.from_pretrained(OUT).eval()
        saved = dict(np.load(os.path.join(OUT, "reference.npz")))
        with torch.no_grad():
            logits = model(torch.from_numpy(saved["input_ids"])).logits.numpy()
        again = reference(model, hf_tokenizer(OUT))
        diff = np.abs(logits - saved["logits"]).max()
        same = np.array_equal(again["greedy"], saved["greedy"])
        with open(os.path.join(OUT, "tokenizer_reference.json"), encoding="utf-8") as f:
            ids_same = json.load(f) == tokenizer_reference(hf_tokenizer(OUT))
        print(f"logits max |diff| {diff:.2e}, greedy tokens equal: {same}, "
              f"tokenizer ids equal: {ids_same}")
        if diff > 1e-5 or not same or not ids_same:
            raise SystemExit("the committed fixture does not match transformers")
        return
    os.makedirs(OUT, exist_ok=True)
    vocab_size = tokenizer_files(OUT)
    tokenizer = hf_tokenizer(OUT)
    model = build(vocab_size)
    model.save_pretrained(OUT, safe_serialization=True)
    np.savez(os.path.join(OUT, "reference.npz"), **reference(model, tokenizer))
    with open(os.path.join(OUT, "tokenizer_reference.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_reference(tokenizer), f, ensure_ascii=False, indent=1)
    sizes = {f: os.path.getsize(os.path.join(OUT, f)) for f in sorted(os.listdir(OUT))}
    print(sizes, "greedy:", reference(model, tokenizer)["greedy"].tolist())


if __name__ == "__main__":
    main()
