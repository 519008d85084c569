"""Greedy generation of one GPT through LiteRT-LM vs our own TFLite host loop.

The same model (random weights, seeded) is exported twice:

* ``--format=litertlm``: LiteRT-LM's engine (``litert_lm.Engine`` ->
  ``create_session`` -> ``run_prefill`` / ``run_decode``; the C++ runtime of
  the Android / iOS SDKs) does the loop, sampling and detokenization;
* ``--format=tflite``: ``export.generate.TFLiteGenerator`` (the LiteRT
  interpreter's signature runners + NumPy argmax, in Python).

Rows: decode tokens/s as wall clock over the whole decode (``run_decode`` /
the loop after prefill), and LiteRT-LM's own decode counter. One CPU thread
each; each runtime in a fresh process; the best of ``--rounds``.

    python -m benchmarks.litertlm_generation                 # 6 x 384, vocab 8000, 256 positions
    python -m benchmarks.litertlm_generation --quick         # gpt_tiny-sized smoke run
"""

import argparse
import os
import shutil
import tempfile
import time

from benchmarks import common

MODULE = "benchmarks.litertlm_generation"
SMALL = {"hidden_dim": 384, "num_layers": 6, "num_heads": 6, "max_positions": 256,
         "prefill_length": 32}
TINY = {"hidden_dim": 64, "num_layers": 2, "num_heads": 4, "max_positions": 128,
        "prefill_length": 16}
PROMPT = "The function returns the value of the attribute named by the string"


def litertlm_job(path, new_tokens, runs):
    from export.litertlm import LiteRTLMGenerator

    engine = LiteRTLMGenerator(path, num_threads=1)
    engine.generate(PROMPT, new_tokens)  # warm-up
    best = None
    for _ in range(runs):
        session = engine.engine.create_session(apply_prompt_template=False,
                                               max_output_tokens=new_tokens)
        session.run_prefill([PROMPT])
        start = time.perf_counter()
        session.run_decode()
        seconds = time.perf_counter() - start
        info = session.get_benchmark_info()
        session.close()
        row = {"tokens": info.last_decode_token_count, "seconds": seconds,
               "engine_tokens_per_s": info.last_decode_tokens_per_second}
        best = row if best is None or seconds < best["seconds"] else best
    best["tokens_per_s"] = best["tokens"] / best["seconds"]
    return best


def tflite_job(path, prompt_ids, new_tokens, runs):
    from export.generate import TFLiteGenerator

    loop = TFLiteGenerator(path, num_threads=1)
    loop.generate(prompt_ids, new_tokens)  # warm-up
    best = None
    for _ in range(runs):
        loop.generate(prompt_ids, new_tokens)
        seconds = sum(loop.timings["decode_s"])
        row = {"tokens": len(loop.timings["decode_s"]), "seconds": seconds}
        best = row if best is None or seconds < best["seconds"] else best
    best["tokens_per_s"] = best["tokens"] / best["seconds"]
    return best


HANDLERS = {"litertlm": litertlm_job, "tflite": tflite_job}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, few tokens")
    parser.add_argument("--new_tokens", type=int, default=None, help="tokens generated")
    parser.add_argument("--runs", type=int, default=5, help="timed generations per process")
    parser.add_argument("--rounds", type=int, default=2, help="processes per runtime (best)")
    args = parser.parse_args(argv)
    args.new_tokens = args.new_tokens or (16 if args.quick else 128)
    common.require_positive(parser, args, ["new_tokens", "runs", "rounds"])
    return args


def plan(args):
    """Trains the tokenizer, builds the model and writes both files (in this
    process, before any timing); returns the two jobs."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    import keras_zoo
    from export import export_model
    from keras_zoo.data import text
    from keras_zoo.data.tokenizers import SentencePieceTokenizer

    keras.utils.set_random_seed(0)
    rows = text.read_bundled("english_prose", "train")
    tokenizer = SentencePieceTokenizer.train([r["text"][:4000] for r in rows],
                                             vocab_size=512 if args.quick else 8000)
    config = TINY if args.quick else SMALL
    model = keras_zoo.GPT(vocab_size=tokenizer.vocab_size, dropout=0.0,
                          sequence_length=config["max_positions"], **config)
    model.tokenizer = tokenizer
    folder = args.folder = tempfile.mkdtemp(prefix="litertlm_bench_")
    bundle = export_model(model, os.path.join(folder, "gpt.litertlm"), format="litertlm")
    flat = export_model(model, os.path.join(folder, "gpt.tflite"))
    prompt_ids = [tokenizer.start_id] + tokenizer.encode(PROMPT)  # as the engine runs it
    args.describe = (f"GPT {config['num_layers']} x {config['hidden_dim']}, vocab "
                     f"{tokenizer.vocab_size}, context {config['max_positions']}, prompt "
                     f"{len(prompt_ids)} tokens, {args.new_tokens} new; .litertlm "
                     f"{bundle['size_bytes'] / 1e6:.1f} MB, .tflite "
                     f"{flat['size_bytes'] / 1e6:.1f} MB")
    run = {"new_tokens": args.new_tokens, "runs": args.runs}
    return [("LiteRT-LM engine (run_decode)", {"kind": "litertlm", "group": "a",
                                                "args": {"path": bundle["path"], **run}}),
            ("export.generate loop (TFLite)", {"kind": "tflite", "group": "b",
                                               "args": {"path": flat["path"],
                                                        "prompt_ids": prompt_ids, **run}})]


def report(args, jobs, results):
    shutil.rmtree(args.folder, ignore_errors=True)  # the two exported files
    rows = []
    for (label, _), r in zip(jobs, results):
        if "error" in r:
            rows.append([label, r["error"], "-", "-", "-"])
            continue
        rows.append([label, r["tokens"], common.fmt(r["tokens_per_s"], 0),
                     common.fmt_significant(1e3 * r["seconds"] / r["tokens"], suffix=" ms"),
                     common.fmt(r.get("engine_tokens_per_s"), 0)])
    return "\n".join([f"LiteRT-LM vs export.generate, greedy decode, 1 thread: {args.describe}",
                      common.machine_line(), "",
                      common.markdown_table(["runtime", "tokens", "tokens/s (wall)",
                                             "per token", "engine's own tokens/s"], rows)])


def main(argv=None):
    common.script_main(MODULE, HANDLERS, parse_args, plan, report, argv)


if __name__ == "__main__":
    main()
