r"""English -> German translation on the bundled gettext messages, end to end.

    python -m experiments.recipes.translation                 # train, evaluate, export
    python -m experiments.recipes.translation --work_dir=runs/en_de --tflite_sentences=200

1. Trains ``experiments/configs/translation_en_de.py`` through
   ``experiments.train`` (resumes if ``--work_dir`` holds a run).
2. Translates the whole test split (1,926 pairs; no English string of it is
   in the training split) greedily and with beam 4 (alpha 0.6), and scores
   corpus BLEU with sacreBLEU (its signature is printed) and keras-hub's BLEU,
   plus ROUGE-L, next to two floors on the same split: copying the source
   (software messages share names, options and placeholders with their
   translations) and a word-by-word dictionary learned from the training
   split (each English word -> the German word with the highest Dice
   co-occurrence score; unknown words are copied).
3. Exports the encoder + decoder-step signatures to TFLite (float32 and
   dynamic-range int8), translates ``--tflite_sentences`` test sentences with
   the .tflite file alone (``export/translate.py``) and counts how many give
   exactly the Keras model's greedy tokens; reports sizes and the median
   per-token decoder latency (1 thread).
Writes ``<work_dir>/translation_report.{json,md}``.
"""

import collections
import json
import os
import re
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags

flags.DEFINE_string("work_dir", "runs/translation_en_de", "Run folder (resumes).")
flags.DEFINE_string("train_config", "experiments/configs/translation_en_de.py",
                    "Training config file (experiments.train --config).")
flags.DEFINE_integer("steps", None, "Override the config's train_steps.")
flags.DEFINE_integer("tflite_sentences", 200, "Test sentences translated with the .tflite files.")
flags.DEFINE_integer("examples", 8, "Example translations printed.")
flags.DEFINE_integer("test_sentences", None, "Score only the first N test pairs (smoke runs); "
                     "default: the whole test split.")
FLAGS = flags.FLAGS

WORD = re.compile(r"\w+|[^\w\s]+", re.UNICODE)


def dictionary_baseline(train_pairs):
    """English word -> German word by Dice co-occurrence over the training pairs."""
    en_count, de_count, joint = collections.Counter(), collections.Counter(), \
        collections.Counter()
    for en, de in train_pairs:
        e_words, d_words = set(WORD.findall(en.lower())), set(WORD.findall(de))
        en_count.update(e_words)
        de_count.update(d_words)
        joint.update((e, d) for e in e_words for d in d_words)
    best = {}
    for (e, d), n in joint.items():
        # the highest Dice score; ties to the more frequent pair, then the first
        # word in sorted order (set order changes with PYTHONHASHSEED)
        rank = (2 * n / (en_count[e] + de_count[d]), n)
        held = best.get(e)
        if held is None or rank > held[0] or (rank == held[0] and d < held[1]):
            best[e] = (rank, d)
    best = {e: (rank[0], d) for e, (rank, d) in best.items()}

    def translate(text):
        out = []
        for token in WORD.findall(text):
            score, word = best.get(token.lower(), (0.0, None))
            out.append(word if word is not None and score >= 0.2 and token[0].isalnum()
                       else token)
        return " ".join(out)

    return translate


def bleu_scores(references, hypotheses):
    from keras_zoo.text_metrics import corpus_bleu, rouge_l

    result = {"bleu_keras_hub": corpus_bleu(references, hypotheses),
              "rouge_l": rouge_l(references, hypotheses)}
    try:
        import sacrebleu

        bleu = sacrebleu.BLEU()
        result["sacrebleu"] = bleu.corpus_score(hypotheses, [references]).score
        result["sacrebleu_signature"] = str(bleu.get_signature())
    except ImportError:
        result["sacrebleu"] = None
    return result


def evaluate(model, pairs):
    sources, references = [s for s, _ in pairs], [t for _, t in pairs]
    rows = {}
    for name, beam in (("greedy", 1), ("beam 4", 4)):
        started = time.perf_counter()
        hyps = model.translate(sources, beam_size=beam, alpha=0.6, batch_size=64)
        rows[name] = {**bleu_scores(references, hyps), "seconds": time.perf_counter() - started,
                      "hypotheses": hyps}
    return rows


def tflite_check(model, preset_dir, work_dir, pairs, count):
    import numpy as np

    from export import export as exporter
    from export.translate import TFLiteTranslator

    out = {}
    sources = model._source_ids(model.tokenizer.encode([s for s, _ in pairs[:count]]))
    expected = model.translate_ids(sources, beam_size=1, batch_size=64)
    for quantization in ("none", "dynamic_int8"):
        path = os.path.join(work_dir, f"transformer_{quantization}.tflite")
        if not os.path.exists(path):
            exporter.export_model(model, path, format="tflite", quantization=quantization)
        translator = TFLiteTranslator(path, num_threads=1)
        got = [translator.translate_ids(s) for s in sources]
        same = sum(g == e for g, e in zip(got, expected))
        out[quantization] = {
            "path": path, "size_mb": os.path.getsize(path) / 1e6, "sentences": len(sources),
            "identical_to_keras": same,
            "per_token_ms": 1e3 * float(np.median(translator.step_seconds)),
            "bleu_keras_hub": bleu_scores([t for _, t in pairs[:count]],
                                          [model.tokenizer.decode(g) for g in got]
                                          )["bleu_keras_hub"]}
    return out


def run(work_dir, config_path, train_steps=None, tflite_sentences=200, examples=8,
        test_sentences=None):
    import keras_zoo
    from experiments import train as trainer
    from keras_zoo.data import text

    config = trainer.load_config_file(config_path)
    config["model_dir"] = os.path.join(work_dir, "run")
    config["test_dataset"] = "none"  # best/ on validation; the test pairs are scored below, once
    if train_steps:
        config["train_steps"] = train_steps
    started = time.perf_counter()
    result = trainer.train(config)
    train_seconds = time.perf_counter() - started
    model = keras_zoo.from_preset(os.path.join(work_dir, "run", "best"))
    test = [(r["en"], r["de"]) for r in text.read_bundled("gettext_en_de", "test")]
    test = test[:test_sentences] if test_sentences else test
    train_pairs = [(r["en"], r["de"]) for r in text.read_bundled("gettext_en_de", "train")]
    rows = evaluate(model, test)
    references = [t for _, t in test]
    rows["copy the source"] = bleu_scores(references, [s for s, _ in test])
    word_by_word = dictionary_baseline(train_pairs)
    rows["word-by-word dictionary"] = bleu_scores(references, [word_by_word(s) for s, _ in test])
    report = {"train_seconds": train_seconds, "steps": result.get("steps"),
              "parameters": model.count_params(), "test_pairs": len(test),
              "rows": {k: {m: v for m, v in r.items() if m != "hypotheses"}
                       for k, r in rows.items()},
              "examples": [{"source": s, "reference": t, "greedy": g, "beam 4": b}
                           for (s, t), g, b in zip(test[:examples],
                                                    rows["greedy"]["hypotheses"],
                                                    rows["beam 4"]["hypotheses"])],
              "tflite": tflite_check(model, os.path.join(work_dir, "run", "best"), work_dir,
                                     test, tflite_sentences)}
    markdown = to_markdown(report)
    with open(os.path.join(work_dir, "translation_report.json"), "w") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
    with open(os.path.join(work_dir, "translation_report.md"), "w") as f:
        f.write(markdown + "\n")
    print(markdown)
    return report


def to_markdown(report):
    lines = [f"Test split: {report['test_pairs']:,} pairs; model {report['parameters']:,} "
             f"parameters, {report['steps']} steps, {report['train_seconds'] / 60:.1f} min "
             "of training (wall, this machine).", "",
             "| system | sacreBLEU | keras-hub BLEU | ROUGE-L F1 | decode s |",
             "|---|---:|---:|---:|---:|"]
    signature = None
    for name, row in report["rows"].items():
        signature = signature or row.get("sacrebleu_signature")
        sacre = f"{row['sacrebleu']:.2f}" if row.get("sacrebleu") is not None else "-"
        seconds = f"{row['seconds']:.0f}" if "seconds" in row else ""
        lines.append(f"| {name} | {sacre} | {row['bleu_keras_hub']:.2f} | "
                     f"{row['rouge_l']:.2f} | {seconds} |")
    if signature:
        lines += ["", f"sacreBLEU signature: `{signature}`"]
    lines += ["", "| TFLite | size MB | identical to Keras greedy | BLEU | ms per token (1 thread) |",
              "|---|---:|---:|---:|---:|"]
    for name, row in report["tflite"].items():
        lines.append(f"| {name} | {row['size_mb']:.1f} | {row['identical_to_keras']}/"
                     f"{row['sentences']} | {row['bleu_keras_hub']:.2f} | "
                     f"{row['per_token_ms']:.2f} |")
    lines += ["", "| source | reference | greedy | beam 4 |", "|---|---|---|---|"]
    for e in report["examples"]:
        cells = [e[k].replace("|", "\\|") for k in ("source", "reference", "greedy", "beam 4")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
        sys.exit(2)
    os.makedirs(FLAGS.work_dir, exist_ok=True)
    run(FLAGS.work_dir, FLAGS.train_config, FLAGS.steps, FLAGS.tflite_sentences, FLAGS.examples,
        FLAGS.test_sentences)


if __name__ == "__main__":
    app.run(main)
