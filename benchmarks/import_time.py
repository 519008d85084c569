"""Import time: ``import keras_zoo`` against ``import keras`` and ``import keras_hub``.

Each import runs in a fresh interpreter (nothing cached in ``sys.modules``),
the three alternating so that a busy moment of the machine hits all of them;
the median of ``--repeats`` is reported. A last process lists which heavy
optional libraries ``import keras_zoo`` pulled in, and from where: they
should load only when a feature needs them.

    python -m benchmarks.import_time                # 7 rounds
    python -m benchmarks.import_time --quick        # 1 round (smoke run)
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

from benchmarks import common

MODULES = ("keras", "keras_zoo", "keras_hub")
TARGET_EXTRA_SECONDS = 0.5  # keras_zoo may cost at most this much more than keras
# Heavy libraries a plain ``import keras_zoo`` should not load (lazy imports instead).
SHOULD_BE_LAZY = ("keras_hub", "tensorflow_datasets", "matplotlib", "ai_edge_litert", "torch",
                  "timm", "sklearn")

# Times the import and records, for each watched top-level package, the frame
# that first asked for it (the deepest keras_zoo/export/experiments frame if
# any): the file and line to change to make it lazy. The watcher returns None
# at once for every other name, so it costs nothing measurable.
_TIME_ONE = """
import json, sys, time, traceback
WATCH = set({watch!r})
found = {{}}

class Watcher:
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in WATCH and top not in found:
            frames = [f for f in traceback.extract_stack()[:-1]
                      if "importlib" not in f.filename and "<frozen" not in f.filename]
            ours = [f for f in frames if "/keras_zoo/" in f.filename or "/export/" in f.filename
                    or "/experiments/" in f.filename]
            f = (ours or frames)[-1]
            found[top] = f"{{f.filename}}:{{f.lineno}}"
        return None

sys.meta_path.insert(0, Watcher())
start = time.perf_counter()
import {module}
seconds = time.perf_counter() - start
print("RESULT", json.dumps({{"seconds": seconds, "eager": found}}))
"""


def time_import(module):
    """(seconds to import ``module`` in a fresh interpreter, {heavy package:
    'file:line' that imported it}), or (None, error text) if it failed."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    proc = subprocess.run([sys.executable, "-c", _TIME_ONE.format(module=module,
                                                                  watch=list(SHOULD_BE_LAZY))],
                          capture_output=True, text=True, check=False, cwd=common.REPO_ROOT,
                          env=env, timeout=600)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
            return result["seconds"], result["eager"]
    return None, proc.stderr.strip()[-300:]


def short_path(location):
    root = common.REPO_ROOT + os.sep
    return location.removeprefix(root)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one round: a smoke run")
    p.add_argument("--repeats", type=int, default=7, help="fresh processes per module")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.repeats <= 0:
        p.error(f"--repeats must be positive, got {args.repeats}")
    repeats = 1 if args.quick else args.repeats
    modules = [m for m in MODULES if common.installed(m)]
    times = {m: [] for m in modules}
    eager, errors = {}, {}
    for _ in range(repeats):
        for m in modules:
            seconds, found = time_import(m)
            if seconds is None:
                errors[m] = found
            else:
                times[m].append(seconds)
                eager[m] = found
    median = {m: statistics.median(t) for m, t in times.items() if t}
    base = median.get("keras")
    rows = []
    for m in MODULES:
        if m not in median:
            status = ("not installed" if m not in modules
                      else "failed: " + (errors.get(m) or "?").splitlines()[-1][:100])
            rows.append([f"`import {m}`", status, "-", "-", "-"])
            continue
        extra = median[m] - base if base is not None else None
        rows.append([f"`import {m}`", common.fmt(median[m], 2), common.fmt(min(times[m]), 2),
                     common.fmt(max(times[m]), 2),
                     common.fmt(extra, 2, " s") if m != "keras" else "-"])
    lines = [f"## Import time (median of {repeats} fresh processes)", "", common.machine_line(), "",
             common.markdown_table(["import", "median s", "min s", "max s", "more than keras"],
                                   rows), "", "Targets:"]
    if base is not None and "keras_zoo" in median:
        extra = median["keras_zoo"] - base
        verdict = "met" if extra <= TARGET_EXTRA_SECONDS else \
            f"MISSED by {extra - TARGET_EXTRA_SECONDS:.2f} s"
        lines.append(f"- `import keras_zoo` costs {extra:.2f} s more than `import keras` "
                     f"(target: at most {TARGET_EXTRA_SECONDS} s more): {verdict}")
    else:
        lines.append("- `import keras_zoo` minus `import keras`: not measured (an import failed)")
    # Keras itself loads matplotlib (keras.visualization) and scikit-learn
    # (keras.wrappers) when they are installed; only what keras_zoo adds counts.
    by_keras = eager.get("keras", {})
    extra = {k: v for k, v in eager.get("keras_zoo", {}).items() if k not in by_keras}
    for package, where in sorted(extra.items()):
        lines.append(f"- eager import: `import keras_zoo` loads {package} "
                     f"(from {short_path(where)}); it should be imported lazily: MISSED")
    if "keras_zoo" in eager and not extra:
        lines.append(f"- `import keras_zoo` loads none of {', '.join(SHOULD_BE_LAZY)} beyond "
                     "what `import keras` loads: met")
    if by_keras:
        lines.append(f"- note: `import keras` itself loads {', '.join(sorted(by_keras))} "
                     "(installed here), so keras_zoo cannot avoid them")
    if args.quick:
        lines.append("- note: --quick times one round; its numbers are noise")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
