r"""Trains any keras_zoo preset with absl flags, on one CPU or a TPU pod.

    python -m experiments.train --preset=vit_tiny_digits --dataset=digits \
        --epochs=60 --learning_rate=1e-3 --model_dir=/tmp/vit_digits
    python -m experiments.train --config=experiments/configs/imagenet_vit_b16_tpu.py \
        --tpu=my-tpu --model_dir=gs://bucket/vit_b16 [--dry_run]

Flags set on the command line override the values of ``--config``, which
override the flag defaults. The same settings as a dict run in-process:
``experiments.train.train({"preset": "lenet5", "epochs": 30, ...})``.

The trainer is generic: it builds ``keras_zoo.from_preset(preset)`` under
``strategy.scope()``, compiles with the model's ``compile_defaults()`` and
maps training batches through its ``train_input_transform()``. A family with
its own objective overrides ``train_step``; nothing here names a family.
"""

import math
import os
import runpy
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags, logging

from keras_zoo import distribute

FLAGS = flags.FLAGS

flags.DEFINE_string("preset", None, "Registry name (keras_zoo.list_presets()) or preset "
                    "folder (local or gs://) of the model to train.")
flags.DEFINE_string("config", None, "Python file defining CONFIG = {...} (or get_config()) "
                    "or a JSON file; keys are these flag names. Flags given on the command "
                    "line override it.")
flags.DEFINE_string("model_overrides", None, "Config values of the model changed from the "
                    "preset: JSON object ('{\"num_classes\": 100}') or key=value,... "
                    "('dropout=0.1,num_layers=4').")
flags.DEFINE_string("dataset", "digits", "Training data: digits, tfds:NAME[:SPLIT], "
                    "synthetic[:N].")
flags.DEFINE_string("validation_dataset", None, "Data for monitoring, early choices and "
                    "best/: default: the dataset's own validation split (digits:validation, "
                    "NAME:validation of a text set, tfds:NAME:validation), or for a tfds set "
                    "without one the last 10% of its train split (training then uses the "
                    "first 90%); 'none' skips it.")
flags.DEFINE_alias("eval_dataset", "validation_dataset")
flags.DEFINE_string("test_dataset", None, "Data scored once, at the end, with best/'s "
                    "weights: default: the dataset's test split (tfds sets without one: "
                    "their validation split, if it was not used for selection); 'none' "
                    "skips it. Never used to choose anything.")
flags.DEFINE_string("data_dir", None, "tfds data directory (local or gs://).")
flags.DEFINE_enum("strategy", "auto", list(distribute.STRATEGIES),
                  "auto: TPU if one is named or attached, else multi_worker if TF_CONFIG "
                  "names several workers, else all local GPUs, else one device.")
flags.DEFINE_string("tpu", None, "Cloud TPU name, grpc://HOST:8470, or 'local' on a TPU VM.")
flags.DEFINE_integer("num_cpu_devices", None, "Split the CPU into N logical devices (for "
                     "--strategy=mirrored without GPUs; tests, laptops).")
flags.DEFINE_string("model_dir", None, "Where checkpoints, presets (best/, last/), "
                    "TensorBoard logs, metrics.csv/json and curves.png go (local or gs://). "
                    "Re-running the same command resumes from its newest checkpoint.")
flags.DEFINE_integer("global_batch_size", 64, "Batch over all replicas; each replica gets "
                     "global_batch_size // replicas.")
flags.DEFINE_integer("epochs", None, "Passes over the training set (exclusive with "
                     "--train_steps).")
flags.DEFINE_integer("train_steps", None, "Optimizer steps in total (exclusive with --epochs).")
flags.DEFINE_integer("eval_every", None, "Steps between evaluations, checkpoints and summary "
                     "lines (one Keras epoch); default: one pass over the training set.")
flags.DEFINE_float("learning_rate", 1e-3, "Peak learning rate, reached after warmup, then "
                   "cosine decay to min_learning_rate.")
flags.DEFINE_integer("warmup_steps", None, "Linear warmup steps; default 5% of the steps.")
flags.DEFINE_float("min_learning_rate", 0.0, "Learning rate at the end of the cosine decay.")
SCHEDULES = ("cosine", "inverse_sqrt", "linear")
flags.DEFINE_enum("lr_schedule", "cosine", list(SCHEDULES),
                  "cosine: linear warmup to --learning_rate, cosine decay to "
                  "--min_learning_rate. inverse_sqrt: the Transformer paper's schedule, "
                  "linear warmup to --learning_rate then decay as 1/sqrt(step) "
                  "(--learning_rate=d_model^-0.5 * warmup^-0.5 reproduces its formula). "
                  "linear: BERT's create_optimizer, linear warmup, then --learning_rate * "
                  "(1 - step / total steps), 0 at the end.")
flags.DEFINE_float("adam_beta_2", None, "Adam/AdamW/LAMB beta_2 (default: Keras', 0.999; "
                   "the Transformer paper: 0.98).")
flags.DEFINE_float("adam_epsilon", None, "Adam/AdamW/LAMB epsilon (default: Keras', 1e-7; "
                   "the Transformer paper: 1e-9).")
OPTIMIZERS = ("adamw", "adam", "sgd", "lamb", "bert_adamw")
PRECISIONS = ("float32", "bfloat16", "mixed_float16")
flags.DEFINE_enum("optimizer", "adamw", list(OPTIMIZERS),
                  "adamw (decoupled weight decay), adam, sgd (momentum 0.9), lamb, "
                  "bert_adamw (BERT's AdamWeightDecayOptimizer: no bias correction, "
                  "epsilon 1e-6 unless --adam_epsilon).")
flags.DEFINE_float("weight_decay", 0.05, "Weight decay (adamw, sgd, lamb); biases and norm "
                   "scales (1-D weights) are not decayed.")
flags.DEFINE_float("clipnorm", None, "Clip gradients to this global norm.")
flags.DEFINE_enum("mixed_precision", "float32", list(PRECISIONS),
                  "bfloat16 on TPU, mixed_float16 (with loss scaling) on GPU.")
flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"],
                  "Compile train/eval steps with XLA. auto: on TPU and GPU (and for --dry_run, "
                  "which checks what a TPU will compile), off on CPU-only machines, where "
                  "TensorFlow's oneDNN kernels train faster than XLA:CPU.", case_sensitive=False)
flags.DEFINE_integer("steps_per_execution", 1, "Steps per compiled call (TPU: 50-200 hides "
                     "host overhead); --eval_every must be a multiple of it.")
flags.DEFINE_integer("shuffle_buffer", 10_000, "Shuffle buffer (capped at ~1 GB of images).")
flags.DEFINE_integer("seed", 0, "Seed of weights init, data order and dropout.")
flags.DEFINE_boolean("qat", False, "Quantization-aware fine-tuning (keras_zoo.quantization) of "
                     "--preset (a trained preset folder or a run's best/): fake-quantized "
                     "kernels and activations, ranges calibrated on the first training batches. "
                     "export.export --quantization=int8 then needs no representative data.")
flags.DEFINE_string("qat_config", None, "QAT options (keras_zoo.quantization.DEFAULTS) as JSON "
                    "or key=value,...")
flags.DEFINE_float("prune_sparsity", None, "Magnitude-prune the quantized kernels to this "
                   "sparsity (polynomial schedule over the first 3/4 of the run); implies --qat.")
flags.DEFINE_boolean("dry_run", False, "Build the model under the strategy, compile, run one "
                     "XLA step on fake data of the real shapes, print parameters, per-replica "
                     "batch and step time, exit. Nothing is written.")

KEYS = ("preset", "model_overrides", "dataset", "validation_dataset", "test_dataset",
        "data_dir", "strategy", "tpu",
        "num_cpu_devices", "model_dir", "global_batch_size", "epochs", "train_steps",
        "eval_every", "learning_rate", "warmup_steps", "min_learning_rate", "lr_schedule",
        "adam_beta_2", "adam_epsilon", "optimizer",
        "weight_decay", "clipnorm", "mixed_precision", "jit_compile", "steps_per_execution",
        "shuffle_buffer", "seed", "qat", "qat_config", "prune_sparsity", "dry_run")
SHUFFLE_BYTES = 1 << 30
ALIASES = {"eval_dataset": "validation_dataset"}  # older name, still read in configs


class TrainError(ValueError):
    """A training setting that cannot work; the message names it and what to do."""


def defaults():
    return {k: FLAGS[k].default for k in KEYS}


# ---------------------------------------------------------------- configuration

def load_config_file(path):
    """A config file as a dict: Python (``CONFIG`` or ``get_config()``) or JSON.
    A file that does not parse or run is one TrainError naming the file and line."""
    import json

    if not os.path.isfile(path):
        raise TrainError(f"--config {path!r}: no such file")
    if path.endswith(".json"):
        with open(path) as f:
            try:
                config = json.load(f)
            except json.JSONDecodeError as e:
                raise TrainError(f"--config {path}:{e.lineno}: not valid JSON: {e.msg}") \
                    from None
    else:
        try:
            namespace = runpy.run_path(path)
            if "get_config" in namespace:
                config = namespace["get_config"]()
            elif "CONFIG" in namespace:
                config = namespace["CONFIG"]
            else:
                raise TrainError(f"--config {path!r} defines neither CONFIG nor get_config()")
        except SyntaxError as e:
            raise TrainError(f"--config {path}:{e.lineno}: syntax error: {e.msg}") from None
        except TrainError:
            raise
        except Exception as e:  # noqa: BLE001  (whatever the file's code raises)
            raise TrainError(f"--config {path}:{_line_in(e, path)}: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}") from None
    if not isinstance(config, dict):
        raise TrainError(f"--config {path!r}: expected a dict of settings, got "
                         f"{type(config).__name__}")
    return config


def _line_in(error, path):
    """The line of ``path`` in ``error``'s traceback (the innermost), or '?'."""
    import traceback

    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
             if os.path.abspath(frame.filename) == os.path.abspath(path)]
    return lines[-1] if lines else "?"


def _key_line(path, key):
    """The first line of ``path`` that names ``key`` in quotes, or '?'."""
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if f'"{key}"' in line or f"'{key}'" in line:
                return number
    return "?"


def check_types(config, where=None):
    """Each setting must have its flag's type; ``where(key)`` says where it came
    from (a config file and line) in the message."""
    for key, value in config.items():
        if key not in KEYS or value is None:
            continue
        kind = FLAGS[key].flag_type()
        if kind == "int":
            ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
        elif kind == "float":
            ok, expected = (isinstance(value, (int, float)) and not isinstance(value, bool),
                            "a number")
        elif kind == "bool":
            ok, expected = isinstance(value, bool), "true or false"
        elif key == "model_overrides":
            ok, expected = isinstance(value, (str, dict)), "a JSON object or key=value,..."
        elif key == "jit_compile":
            ok, expected = isinstance(value, (str, bool)), "auto, true or false"
        else:
            ok, expected = isinstance(value, str), "a string"
        if not ok:
            prefix = f"{where(key)}: " if where else ""
            raise TrainError(f"{prefix}{key}={value!r} ({type(value).__name__}): expected "
                             f"{expected}")


def parse_overrides(value, flag="--model_overrides"):
    """'{"a": 1}' or 'a=1,b=0.1,c=gelu' -> dict; values parsed as JSON when possible.
    ``flag`` names the flag in the errors."""
    import json

    if value is None or isinstance(value, dict):
        return dict(value or {})
    value = value.strip()
    if not value:
        return {}
    if value.startswith("{"):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as e:
            raise TrainError(f"{flag} is not a valid JSON object: {e}") from None
        if not isinstance(parsed, dict):
            raise TrainError(f"{flag} must be a JSON object, got {type(parsed).__name__}")
        return parsed
    out = {}
    for item in value.split(","):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise TrainError(f"{flag} item {item!r} is not key=value "
                             "(lists need the JSON form)")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def config_from_flags():
    """Flag defaults < --config file < flags given on the command line."""
    config = defaults()
    if FLAGS.config:
        from_file = _renamed(load_config_file(FLAGS.config), f"--config {FLAGS.config!r}:")
        unknown = sorted(set(from_file) - set(KEYS))
        if unknown:
            raise TrainError(f"--config {FLAGS.config!r} has unknown keys {unknown}; "
                             f"known: {', '.join(KEYS)}")
        check_types(from_file, lambda key: f"--config {FLAGS.config}:"
                    f"{_key_line(FLAGS.config, key)}")
        config.update(from_file)
        if "epochs" in from_file and not FLAGS["epochs"].present and FLAGS["train_steps"].present:
            config["epochs"] = None  # a train_steps flag replaces the file's epochs
        if "train_steps" in from_file and not FLAGS["train_steps"].present \
                and FLAGS["epochs"].present:
            config["train_steps"] = None
    for key in KEYS:
        if FLAGS[key].present:
            config[key] = FLAGS[key].value
    return config


def _renamed(config, where="setting"):
    """``config`` with old key names (ALIASES) under their current ones."""
    config = dict(config)
    for old, new in ALIASES.items():
        if old in config:
            if new in config and config[new] != config[old]:
                raise TrainError(f"{where} {old!r} and {new!r} name the same thing "
                                 f"({old} is its older name): give one")
            config[new] = config.pop(old)
    return config


def resolve(config):
    """Fills defaults and checks every setting; returns a plain dict."""
    config = _renamed(config)
    unknown = sorted(set(config) - set(KEYS))
    if unknown:
        raise TrainError(f"unknown setting(s) {unknown}; known: {', '.join(KEYS)}")
    check_types(config)
    c = {**defaults(), **config}
    c["model_overrides"] = parse_overrides(c["model_overrides"])
    if not c["preset"]:
        raise TrainError("no model: pass --preset=NAME (keras_zoo.list_presets() lists them)")
    if c["epochs"] is not None and c["train_steps"] is not None:
        raise TrainError(f"--epochs={c['epochs']} and --train_steps={c['train_steps']} are "
                         "mutually exclusive: give one")
    if c["epochs"] is None and c["train_steps"] is None:
        if not c["dry_run"]:
            raise TrainError("give --epochs=N (passes over the data) or --train_steps=N")
        c["train_steps"] = 1
    for key in ("epochs", "train_steps", "eval_every", "global_batch_size",
                "steps_per_execution", "shuffle_buffer", "num_cpu_devices"):
        if c[key] is not None and c[key] <= 0:
            raise TrainError(f"--{key} must be positive, got {c[key]}")
    if c["warmup_steps"] is not None and c["warmup_steps"] < 0:
        raise TrainError(f"--warmup_steps must be >= 0, got {c['warmup_steps']}")
    for key in ("learning_rate", "min_learning_rate", "weight_decay", "clipnorm"):
        if c[key] is not None and not math.isfinite(c[key]):
            raise TrainError(f"--{key} must be a finite number, got {c[key]}")
    if c["learning_rate"] <= 0:
        raise TrainError(f"--learning_rate must be positive, got {c['learning_rate']}")
    c["qat_config"] = parse_overrides(c["qat_config"], "--qat_config")
    if c["qat_config"] and not c["qat"] and c["prune_sparsity"] is None:
        raise TrainError(f"--qat_config={c['qat_config']} is for quantization-aware training: "
                         "add --qat (or drop --qat_config)")
    if c["qat_config"]:
        from keras_zoo.quantization import QuantizationError, resolve

        try:
            resolve(c["qat_config"])
        except QuantizationError as e:
            raise TrainError(f"--qat_config: {e}") from None
    if c["prune_sparsity"] is not None and not 0.0 < c["prune_sparsity"] < 1.0:
        raise TrainError(f"--prune_sparsity must be in (0, 1), got {c['prune_sparsity']}")
    if not 0 <= c["min_learning_rate"] <= c["learning_rate"]:
        raise TrainError(f"--min_learning_rate={c['min_learning_rate']:g} must be between 0 "
                         f"and --learning_rate={c['learning_rate']:g} (the cosine decays from "
                         "the peak down to it)")
    if c["weight_decay"] < 0:
        raise TrainError(f"--weight_decay must be >= 0, got {c['weight_decay']:g}")
    if c["clipnorm"] is not None and c["clipnorm"] <= 0:
        raise TrainError(f"--clipnorm must be positive (a global gradient norm), got "
                         f"{c['clipnorm']:g}; leave it unset for no clipping")
    c["jit_compile"] = _jit_setting(c["jit_compile"])
    if c["adam_beta_2"] is not None and not 0 < c["adam_beta_2"] < 1:
        raise TrainError(f"--adam_beta_2 must be in (0, 1), got {c['adam_beta_2']}")
    if c["adam_epsilon"] is not None and c["adam_epsilon"] <= 0:
        raise TrainError(f"--adam_epsilon must be positive, got {c['adam_epsilon']}")
    for key, choices in (("lr_schedule", SCHEDULES), ("strategy", distribute.STRATEGIES),
                         ("optimizer", OPTIMIZERS),
                         ("mixed_precision", PRECISIONS)):
        if c[key] not in choices:
            raise TrainError(f"--{key}={c[key]!r}: expected one of {list(choices)}")
    if not c["model_dir"] and not c["dry_run"]:
        raise TrainError("--model_dir is required (checkpoints, presets, logs go there; "
                         "the same model_dir resumes the run)")
    return c


def _jit_setting(value):
    """--jit_compile as True, False or "auto" (from a flag string or a config bool)."""
    text = str(value).strip().lower()
    if text in ("auto", "true", "false", "1", "0"):
        return "auto" if text == "auto" else text in ("true", "1")
    raise TrainError(f"--jit_compile={value!r}: expected auto, true or false")


def resolve_jit(setting, strategy, dry_run):
    """(jit_compile for Keras, why) from the --jit_compile setting and the strategy.

    "auto" is XLA where it is faster or required: TPUs (XLA is their only
    compiler) and GPUs; not on CPU-only machines, where XLA:CPU trained
    every model we measured slower than TensorFlow's oneDNN kernels
    (ViT-S/16 0.97x, ResNet-50 0.45x, vit_tiny_digits 0.84x, lenet5 0.72x;
    README, Benchmarks). A dry run says "auto" = XLA: it checks what the TPU
    will compile.
    """
    import tensorflow as tf

    on_tpu = isinstance(strategy, tf.distribute.TPUStrategy)
    if setting == "auto":
        if on_tpu or dry_run:
            setting, why = True, "auto: TPU" if on_tpu else "auto: dry run checks the XLA step"
        elif tf.config.list_logical_devices("GPU"):
            setting, why = True, "auto: GPU"
        else:
            setting, why = False, "auto: CPU, where oneDNN kernels beat XLA:CPU"
    else:
        why = "--jit_compile"
    if setting and (strategy.num_replicas_in_sync > 1 or on_tpu):
        # Keras 3 wraps the whole cross-replica step in one XLA cluster, which cannot
        # reach variables on other devices (keras-team/keras#19005); TPUStrategy
        # compiles every step with XLA by itself.
        _say(f"note: jit_compile off for {type(strategy).__name__} with "
             f"{strategy.num_replicas_in_sync} replicas (Keras cannot XLA-compile a "
             "cross-device step; TPUs compile with XLA regardless)")
        return False, ("TPUStrategy compiles every step with XLA itself" if on_tpu
                       else "multi-replica step")
    return setting, why


def check_writable(model_dir):
    """Creates model_dir and writes a probe file, so a bad path fails before training."""
    import tensorflow as tf

    probe = model_dir.rstrip("/") + f"/.write_test_{os.getpid()}"
    try:
        tf.io.gfile.makedirs(model_dir)
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("ok")
        tf.io.gfile.remove(probe)
    except Exception as e:  # noqa: BLE001  (OSError, NotFoundError, PermissionDeniedError...)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TrainError(f"--model_dir {model_dir!r} is not writable: {reason}") from None


def check_preset(preset):
    """Fails fast (before any TPU connection) on a name that is neither a
    registry preset nor an existing folder."""
    import tensorflow as tf

    from keras_zoo import hub, presets

    if preset.startswith(hub.HF_SCHEME):  # hf://ORG/NAME[@REV]: its form; the download waits
        hub.parse_hf_uri(preset)
    elif preset.startswith(hub.KAGGLE_SCHEME):
        hub.parse_kaggle_uri(preset)
    elif not preset.startswith("hf:") and not tf.io.gfile.exists(preset):
        presets.get_preset(preset)  # raises PresetError with the closest names


HOLDOUT = "10%"  # of a tfds train split, when the set has no validation split


def _tfds_splits(name, data_dir):
    """The split names a tfds builder declares (empty when it cannot be built)."""
    try:
        import tensorflow_datasets as tfds

        return set(tfds.builder(name, data_dir=data_dir).info.splits)
    except Exception:  # noqa: BLE001  (not installed / not prepared: the loader says why)
        return set()


def default_splits(spec, data_dir=None, validation_given=False):
    """(training spec, validation spec, test spec) that go with ``--dataset``.

    Validation (monitoring, best/) is the dataset's own validation split; a
    tfds set without one gives the last HOLDOUT of its train split to
    validation and trains on the rest (tfds shuffled its examples when it
    prepared the set, so the slice is a fixed random sample). Test (scored
    once at the end) is the test split; a tfds set without one uses its
    validation split as test, and validation is then carved from train.
    ``validation_given``: the user names validation data, so nothing is carved."""
    from keras_zoo.data import is_text_spec, parse_spec
    from keras_zoo.data import text as text_data

    text = is_text_spec(spec)
    kind, name, split = text_data.parse_spec(spec) if text else parse_spec(spec)
    if kind == "synthetic":  # random data: other seeds (the loader) give other examples
        return spec, f"synthetic:{name}", f"synthetic:{name}"
    pair = text_data.direction(spec) if text else None
    suffix = f":{'-'.join(pair)}" if pair else ""

    def named(s):
        return (f"tfds:{name}:{s}" if kind == "tfds" else f"{name}:{s}") + suffix

    if kind != "tfds":
        return spec, named("validation"), named("test")
    splits = _tfds_splits(name, data_dir)
    test = "test" if "test" in splits or not splits else "validation"
    if "validation" in splits and test != "validation" or not splits:
        return spec, named("validation"), named(test)
    if validation_given:
        return spec, "none", named(test) if test in splits else "none"
    if split != "train":
        raise TrainError(f"tfds:{name} has no validation split to choose best/ on and "
                         f"--dataset trains on {split!r}: name one with "
                         f"--validation_dataset (e.g. tfds:{name}:train[90%:] with "
                         f"--dataset=tfds:{name}:train[:90%])")
    return (named(f"train[:-{HOLDOUT}]"), named(f"train[-{HOLDOUT}:]"),
            named(test) if test in splits else "none")


def check_dataset_spec(spec):
    """Fails fast (before building anything) on a spec no loader knows."""
    from keras_zoo.data import is_text_spec, parse_spec

    if not is_text_spec(spec):
        parse_spec(spec)


# ---------------------------------------------------------------- data

def train_stream(model, examples, info, c, start_step, total_steps):
    """The training batches from global step ``start_step`` on. Each pass over
    the examples is shuffled with its own seed (seed, pass) and batched by the
    family (``model.batch_data``), so the stream is a pure function of the
    step: a resumed run sees the same batches an uninterrupted one would.
    When the family knows how many batches a pass makes, the passes before
    the resume point are not replayed."""
    import tensorflow as tf

    batch = c["global_batch_size"]
    pass_len = model.steps_per_pass(info, batch)
    buffer = max(1, min(c["shuffle_buffer"], SHUFFLE_BYTES // max(1, info.example_bytes)))
    seed = c["seed"]

    def one_pass(index):
        shuffled = examples.shuffle(buffer, seed=tf.cast(seed, tf.int64) * 1_000_003 + index)
        return model.batch_data(shuffled, info, batch, training=True)

    if not getattr(model, "batches_per_pass_exact", True):
        pass_len = None  # an estimate: resume by replaying the stream from step 0
    first_pass = start_step // pass_len if pass_len else 0
    last_pass = math.ceil(total_steps / pass_len) if pass_len else None
    # With global seed 0, tf's get_seed compares (0, op_seed) == (0, 0) and a
    # tensor op seed cannot be a Python bool: trace the passes without a global
    # seed (the op seed alone still fixes the order), then restore it.
    tf.random.set_seed(None)
    try:
        passes = (tf.data.Dataset.range(first_pass, last_pass) if last_pass
                  else tf.data.Dataset.range(2**62))
        stream = passes.flat_map(one_pass).skip(start_step - first_pass * (pass_len or 0))
    finally:
        tf.random.set_seed(seed)
    options = tf.data.Options()
    # Every worker holds the whole (shuffled) stream and keeps its slice of each global batch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    return stream.with_options(options).prefetch(tf.data.AUTOTUNE)


def eval_stream(model, examples, info, batch):
    """Evaluation batches of static shape, every example once (``model.batch_data``)."""
    import tensorflow as tf

    return model.batch_data(examples, info, batch, training=False).prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------- model

def make_optimizer(c, total_steps, model):
    """(optimizer, learning-rate schedule): linear warmup to the peak, cosine decay."""
    import keras

    from keras_zoo.training import optimizers

    wd = c["weight_decay"]
    name = c["optimizer"]
    warmup = c["warmup_steps"] if c["warmup_steps"] is not None else total_steps // 20
    warmup = min(warmup, max(total_steps - 1, 0))
    lr = c["learning_rate"]
    if c["lr_schedule"] == "inverse_sqrt":
        from keras_zoo.training.schedules import InverseSqrtSchedule

        schedule = InverseSqrtSchedule(lr, max(warmup, 1))
    elif c["lr_schedule"] == "linear":
        from keras_zoo.training.schedules import LinearDecayWithWarmup

        schedule = LinearDecayWithWarmup(lr, max(total_steps, 1), warmup)
    else:
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else lr,
            decay_steps=max(total_steps - warmup, 1),
            alpha=c["min_learning_rate"] / lr,
            warmup_target=lr if warmup else None,
            warmup_steps=warmup)
    common = {"learning_rate": schedule, "global_clipnorm": c["clipnorm"]}
    if name in ("adam", "adamw", "lamb", "bert_adamw"):
        common.update({k: c[f"adam_{k}"] for k in ("beta_2", "epsilon")
                       if c[f"adam_{k}"] is not None})

    # Adam(W): keras_zoo's, Keras' arithmetic in TF's fused kernel (one pass per variable).
    if name == "adamw":
        optimizer = optimizers.AdamW(weight_decay=wd, **common)
    elif name == "adam":
        optimizer = optimizers.Adam(**common)
    elif name == "bert_adamw":
        optimizer = optimizers.AdamWeightDecay(weight_decay=wd, **common)
    elif name == "sgd":
        optimizer = keras.optimizers.SGD(momentum=0.9, weight_decay=wd or None, **common)
    else:
        optimizer = keras.optimizers.Lamb(weight_decay=wd or None, **common)
    if name != "adam" and wd:
        # Decaying biases and norm scales only hurts (timm, DeiT, big_vision agree);
        # the model names them (ZooModel.no_weight_decay_variables).
        optimizer.exclude_from_weight_decay(var_list=model.no_weight_decay_variables())
    return optimizer, schedule


def _quantize_aware(model, c, strategy, ds, info, total):
    """--qat / --prune_sparsity: the quantize-aware model (ranges calibrated on the
    first 16 training batches) and the callbacks it needs; nothing family-specific."""
    from keras_zoo import quantization

    calibration = train_stream(model, ds, info, c, 0, total).take(16)
    with strategy.scope():
        model, callbacks = quantization.for_training(
            model, c["qat_config"], c["prune_sparsity"], calibration, total)
    state = quantization.get_state(model)
    _say(f"qat: {len(state.names)} activation quantizers, "
         f"{sum(p.role == 'compute' for _, p in vars(model)['_qat_plan'].layers.values())} "
         f"quantized kernels ({state.qat_config['weights']})"
         + (f", pruning to {c['prune_sparsity']:g}" if c["prune_sparsity"] else ""))
    return model, callbacks


def build_model(c, num_classes):
    """from_preset with the overrides; a classifier whose head does not match the
    dataset's class count gets ``num_classes`` from the data (unless overridden)."""
    import keras_zoo

    from keras_zoo import hub

    overrides = dict(c["model_overrides"])
    # A registry name trains its config from scratch (the ImageNet / DINO recipes);
    # its published weights are --preset=hf://... (keras_zoo.hub.SOURCES names them).
    load_weights = hub.published_source(c["preset"]) is None
    model = keras_zoo.from_preset(c["preset"], load_weights=load_weights, **overrides)
    current = model.get_zoo_config().get("num_classes")
    if (num_classes and isinstance(current, int) and current != num_classes
            and "num_classes" not in overrides):
        _say(f"note: {c['preset']} has num_classes={current}, the dataset {num_classes}: "
             f"building it with num_classes={num_classes}")
        model = keras_zoo.from_preset(c["preset"], load_weights=load_weights, **overrides,
                                      num_classes=num_classes)
    return model


# ---------------------------------------------------------------- training

_quiet = False


def _say(message):
    if not _quiet:
        print(message, flush=True)


def train(config):
    """Trains as ``config`` (keys = flag names) says; returns a dict of results:
    test metrics (``test_accuracy`` for classifiers), wall time, steps, paths
    and the trained ``model``."""
    global _quiet
    started = time.perf_counter()
    c = resolve(config)
    check_dataset_spec(c["dataset"])  # unknown datasets fail before any slow setup
    for key in ("validation_dataset", "test_dataset"):
        if c[key] and c[key].lower() != "none":
            check_dataset_spec(c[key])
    check_preset(c["preset"])
    if c["num_cpu_devices"]:
        distribute.split_cpu(c["num_cpu_devices"])
    import keras

    policy_before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(
        {"float32": "float32", "bfloat16": "mixed_bfloat16"}.get(c["mixed_precision"],
                                                                 c["mixed_precision"]))
    try:
        strategy = distribute.get_strategy(c["strategy"], c["tpu"])
        chief = distribute.is_chief(strategy)
        _quiet = not chief
        if not c["dry_run"] and chief:
            check_writable(c["model_dir"])
        return _train(c, strategy, chief, started)
    finally:
        keras.config.set_dtype_policy(policy_before)
        _quiet = False


def _train(c, strategy, chief, started):
    import keras
    import tensorflow as tf

    from keras_zoo import data
    from keras_zoo.training import (
        BestPreset,
        EpochSummary,
        StepCheckpoint,
        StopAtStep,
        check_run_record,
        read_metrics_csv,
        restore_latest,
        write_curves,
        write_run_record,
    )

    per_replica = distribute.per_replica_batch_size(c["global_batch_size"], strategy)
    _say(f"strategy: {distribute.describe(strategy)}; global batch {c['global_batch_size']}"
         f" = {strategy.num_replicas_in_sync} x {per_replica} per replica")
    keras.utils.set_random_seed(c["seed"])
    spec = c["dataset"]
    if c["dry_run"]:  # fake data of the real shapes, made by the family
        spec = f"synthetic:{2 * c['steps_per_execution'] * c['global_batch_size']}"
    with strategy.scope():
        model = build_model(c, None if c["dry_run"] else data.num_classes_of(spec, c["data_dir"]))
    train_spec, validation_spec, test_spec = (spec, "none", "none") if c["dry_run"] else \
        default_splits(spec, c["data_dir"], validation_given=bool(c["validation_dataset"]))
    validation_spec = c["validation_dataset"] or validation_spec
    test_spec = c["test_dataset"] or test_spec
    ds, info = model.load_data(train_spec, "train", seed=c["seed"], data_dir=c["data_dir"])
    model.prepare_data(ds, info, None if c["dry_run"] else c["model_dir"])
    pass_len = model.steps_per_pass(info, c["global_batch_size"]) or 0
    if info.num_examples is not None and info.num_examples < c["global_batch_size"]:
        raise TrainError(f"dataset {c['dataset']!r} has {info.num_examples} examples, fewer "
                         f"than one global batch of {c['global_batch_size']}")
    if c["dry_run"]:
        total = 2 * c["steps_per_execution"]
    elif c["epochs"] is not None:
        if not pass_len:
            raise TrainError(f"dataset {c['dataset']!r} has no known size: use --train_steps")
        total = c["epochs"] * pass_len
    else:
        total = c["train_steps"]
    interval = min(c["eval_every"] or pass_len or 1000, total)
    spe = c["steps_per_execution"]
    if interval % spe:
        raise TrainError(f"--eval_every={interval} (steps between evaluations) must be a "
                         f"multiple of --steps_per_execution={spe}")
    rounds = math.ceil(total / interval)

    qat_callbacks = []
    if c["qat"] or c["prune_sparsity"] is not None:
        model, qat_callbacks = _quantize_aware(model, c, strategy, ds, info, total)
    jit, jit_reason = resolve_jit(c["jit_compile"], strategy, c["dry_run"])
    with strategy.scope():
        optimizer, schedule = make_optimizer(c, total, model)
        warmup = schedule.warmup_steps
        compile_args = dict(model.compile_defaults())
        if compile_args.get("loss") is not None and compile_args.get("metrics"):
            # Keras applies sample weights to ``weighted_metrics`` only; without weights
            # (training) they are the same metrics, and the weight-0 padding of the
            # last test batch then does not count.
            compile_args["weighted_metrics"] = compile_args.pop("metrics")
        model.compile(optimizer=optimizer, **compile_args, jit_compile=jit,
                      steps_per_execution=spe)
    params = model.count_params()
    inputs = ", ".join(str(tuple(t.shape[1:])) for t in model.inputs)
    _say(f"model: {c['preset']} ({type(model).__name__}, {params:,} parameters, input "
         f"{inputs}), {c['mixed_precision']}, jit_compile={jit} ({jit_reason})")
    if c["dry_run"]:
        return _dry_run(c, model, strategy, ds, info, total, per_replica, params, started)

    model_dir = c["model_dir"].rstrip("/")
    work_dir = model_dir if chief else f"{model_dir}/workers/{distribute.worker_id(strategy)}"
    ckpt_dir = f"{work_dir}/checkpoints"
    start_step = 0
    record = run_record(c, model)
    check_run_record(ckpt_dir, record, model_dir)
    with strategy.scope():
        found = restore_latest(model, ckpt_dir, print_fn=_say)
    write_run_record(ckpt_dir, record)
    if found:
        start_step = found[0]
        _say(f"resuming from step {start_step} ({found[1]})")
    if start_step < total and (total - start_step) % spe:
        raise TrainError(f"{total - start_step} steps to go (from step {start_step} to "
                         f"{total}) is not a multiple of --steps_per_execution={spe}")
    length = f"{c['epochs']} epochs of {pass_len} steps" if c["epochs"] else "train_steps"
    _say(f"schedule: {total} steps ({rounds} x {interval}, {length}), "
         f"{c['optimizer']} lr {c['learning_rate']:g}, warmup {warmup}, {c['lr_schedule']}; "
         f"model_dir {model_dir}")

    eval_ds, extra_callbacks, validation_size = None, [], None
    if validation_spec.lower() != "none":
        if validation_spec == test_spec:
            raise TrainError(f"--validation_dataset and --test_dataset are both "
                             f"{validation_spec!r}: choosing best/ on the data that is "
                             "scored at the end reports a selected, optimistic number")
        val, val_info = model.load_data(validation_spec, "validation", seed=c["seed"] + 1,
                                        data_dir=c["data_dir"])
        validation_size = val_info.num_examples
        eval_ds = eval_stream(model, val, val_info, c["global_batch_size"])
        extra_callbacks = model.evaluation_callbacks(val, val_info, c["global_batch_size"])

    # Epochs of ``interval`` steps from the restored step on; the optimizer's step
    # counter (not the epoch count) decides when the run ends and what is printed.
    first_epoch = start_step // interval
    last_epoch = first_epoch + max(math.ceil((total - start_step) / interval), 0)
    summary = EpochSummary(total, last_epoch, c["global_batch_size"], print_fn=_say)
    callbacks = [StopAtStep(total), *extra_callbacks, summary]
    monitor = None
    if chief:
        callbacks.append(keras.callbacks.CSVLogger(f"{model_dir}/metrics.csv", append=True))
        callbacks.append(keras.callbacks.TensorBoard(f"{model_dir}/logs", write_graph=False))
        metric_names = [getattr(m, "name", str(m)) for m in
                        compile_args.get("metrics") or compile_args.get("weighted_metrics") or []]
        monitor = ("val_accuracy" if "accuracy" in metric_names and eval_ds is not None
                   else "val_loss" if eval_ds is not None else "loss")
        callbacks.append(BestPreset(f"{model_dir}/best", monitor,
                                    mode="max" if monitor.endswith("accuracy") else "min",
                                    description=f"best {monitor} of {c['preset']} run",
                                    print_fn=_say))
    callbacks.append(StepCheckpoint(ckpt_dir))
    callbacks += qat_callbacks

    train_started = time.perf_counter()
    if start_step < total:
        stream = train_stream(model, ds, info, c, start_step, total)
        _keras_multi_worker_fixes(model, strategy, stream.element_spec)
        model.fit(stream, epochs=last_epoch, initial_epoch=first_epoch,
                  steps_per_epoch=interval, validation_data=eval_ds, callbacks=callbacks,
                  shuffle=False,
                  verbose=1 if chief and sys.stdout.isatty() else 0)
    else:
        _say(f"already trained to step {start_step} ({total} asked): nothing to do but "
             "evaluate")
    train_seconds = time.perf_counter() - train_started
    steps_done = int(model.optimizer.iterations.numpy())

    validation_metrics = {k[4:]: float(v) for k, v in summary.last_logs.items()
                          if k.startswith("val_")}
    if eval_ds is not None and not validation_metrics:
        validation_metrics = {k: float(v) for k, v in
                              model.evaluate(eval_ds, verbose=0, return_dict=True).items()}
    results = {
        "preset": c["preset"], "dataset": c["dataset"],
        "train_dataset": {"spec": train_spec, "examples": info.num_examples},
        "validation_dataset": {"spec": validation_spec, "examples": validation_size},
        "test_dataset": {"spec": test_spec, "examples": None},
        "strategy": type(strategy).__name__, "replicas": strategy.num_replicas_in_sync,
        "global_batch_size": c["global_batch_size"], "steps": steps_done,
        "start_step": start_step, "parameters": params,
        "validation_metrics": validation_metrics,
        "train_seconds": round(train_seconds, 2), "model_dir": model_dir,
        "last_preset": f"{model_dir}/last", "best_preset": f"{model_dir}/best",
        "preset_path": f"{model_dir}/best",
    }
    history = None
    if chief:
        model.save_to_preset(f"{model_dir}/last", f"last weights of {c['preset']} run")
        history = read_metrics_csv(f"{model_dir}/metrics.csv")
        if not tf.io.gfile.exists(f"{model_dir}/best/config.json"):
            model.save_to_preset(f"{model_dir}/best", "final weights (nothing monitored)")
        best = callbacks[[type(cb) for cb in callbacks].index(BestPreset)]
        results["best"] = {"monitor": monitor, "value": best.best, "epoch": best.best_epoch}
        results["curves"] = write_curves(history, f"{model_dir}/curves.png",
                                         title=f"{c['preset']} on {c['dataset']}")
    # The test split, once, at the end, with the weights chosen on validation.
    results["test_metrics"], results["test_weights"] = {}, None
    if test_spec.lower() != "none":
        test, test_info = model.load_data(test_spec, "test", seed=c["seed"] + 2,
                                          data_dir=c["data_dir"])
        results["test_dataset"]["examples"] = test_info.num_examples
        last_weights = model.get_weights()
        results["test_weights"] = _load_best_weights(model, f"{model_dir}/best")
        test_ds = eval_stream(model, test, test_info, c["global_batch_size"])
        results["test_metrics"] = {k: float(v) for k, v in model.evaluate(
            test_ds, verbose=0, return_dict=True).items()}
        model.set_weights(last_weights)  # the returned model is the trained one (last/)
    results["test_accuracy"] = results["test_metrics"].get("accuracy")
    results["wall_seconds"] = round(time.perf_counter() - started, 2)
    if chief:
        _write_json(f"{model_dir}/metrics.json",
                    {"results": results, "history": history, "config": _jsonable(c)})
    if results["test_accuracy"] is not None:
        _say(f"test accuracy {results['test_accuracy']:.4f} ({test_spec}, "
             f"{results['test_weights']} weights, chosen on {validation_spec}); "
             f"{results['wall_seconds']:.1f}s wall; presets in {model_dir}/best, /last")
    results["model"] = model
    return results


def _load_best_weights(model, best_dir):
    """Loads best/'s weights into ``model`` (the last weights are saved in last/
    already) and says which weights it holds: "best", or "last" when best/ has
    no weights this model can take (then a warning says so)."""
    import tensorflow as tf
    from keras.src.saving import saving_lib  # objects_to_skip is not on the public API

    path = f"{best_dir}/model.weights.h5"
    if not tf.io.gfile.exists(path):
        _say(f"warning: {path} is missing: the test split is scored with the last weights")
        return "last"
    try:  # a preset holds no optimizer state: skip it rather than warn
        saving_lib.load_weights_only(model, path, objects_to_skip=[model.optimizer])
    except Exception as e:  # noqa: BLE001  (a model whose weights best/ does not match)
        _say(f"warning: best/ weights do not load into the trained model ({e}); the test "
             "split is scored with the last weights")
        return "last"
    return "best"


# What a checkpoint belongs to: resuming it under other values of these would
# train another model, on other batches, or from another optimizer's state.
# (Schedules, evaluation cadence, strategy and a larger --train_steps may change.)
RUN_IDENTITY = ("preset", "dataset", "global_batch_size", "seed", "optimizer")


def run_record(c, model):
    """The settings ``run.json`` records beside the checkpoints (flat, JSON values)."""
    record = {key: c[key] for key in RUN_IDENTITY}
    record["family"] = type(model).__name__
    record.update({f"model.{k}": v for k, v in model.get_zoo_config().items()})
    return record


def _keras_multi_worker_fixes(model, strategy, element_spec):
    """Two Keras 3.15 defects make ``fit`` fail under MultiWorkerMirroredStrategy
    (keras-team/keras#20585, tensorflow/tensorflow#72388); both are patched here,
    for this strategy only:

    * before ``fit`` Keras builds the metrics from a fetched batch that it
      ``strategy.reduce``-s, which fails for a nest of per-replica values;
      only shapes and dtypes are needed, so the model builds from the
      dataset's element spec;
    * the step's logs are reduced with ``reduce("MEAN", v, axis=0)``, which
      fails for scalars; scalars are reduced with ``axis=None``.
    """
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as keras_tf_trainer

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return

    def build(iterator=None, data_batch=None):
        with strategy.scope():
            model._symbolic_build(data_batch=element_spec)

    model._maybe_symbolic_build = build
    original = getattr(keras_tf_trainer.reduce_per_replica, "__wrapped__",
                       keras_tf_trainer.reduce_per_replica)

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and \
                isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return tf.nest.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=0 if v.shape.rank else None)
                if isinstance(v, tf.distribute.DistributedValues) or tf.is_tensor(v) else v,
                values)
        return original(values, strategy, reduction)

    reduce_per_replica.__wrapped__ = original
    keras_tf_trainer.reduce_per_replica = reduce_per_replica


def _dry_run(c, model, strategy, ds, info, total, per_replica, params, started):
    import keras

    stream = train_stream(model, ds, info, c, 0, total)
    marks = []

    class _Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            marks.append(time.perf_counter())

    t0 = time.perf_counter()
    _keras_multi_worker_fixes(model, strategy, stream.element_spec)
    history = model.fit(stream, epochs=1, steps_per_epoch=total, callbacks=[_Timer()],
                        verbose=0, shuffle=False)
    first = marks[0] - t0
    spe = c["steps_per_execution"]
    step = (marks[-1] - marks[0]) / spe if len(marks) > 1 else first
    trainable = sum(int(math.prod(w.shape)) for w in model.trainable_weights)
    _say(f"dry run ok: {params:,} parameters ({trainable:,} trainable); per-replica batch "
         f"{per_replica} x {strategy.num_replicas_in_sync} replicas; first step (trace + "
         f"compile) {first:.1f}s; step time {step * 1000:.0f} ms "
         f"({c['global_batch_size'] / step:,.1f} examples/s)")
    return {"dry_run": True, "parameters": params, "trainable_parameters": trainable,
            "per_replica_batch_size": per_replica, "replicas": strategy.num_replicas_in_sync,
            "first_step_seconds": first, "step_seconds": step,
            "logs": {k: float(v[-1]) for k, v in history.history.items()},
            "wall_seconds": time.perf_counter() - started, "model": model}


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if k != "model"}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def _write_json(path, obj):
    import json

    import tensorflow as tf

    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        json.dump(_jsonable(obj), f, indent=2)
    tf.io.gfile.rename(tmp, path, overwrite=True)


# ---------------------------------------------------------------- command line

def user_errors():
    """The exception types that mean 'a setting is wrong' (one line, exit 2)."""
    from keras_zoo.data import DatasetError
    from keras_zoo.presets import PresetError
    from keras_zoo.training import CheckpointError

    return (TrainError, PresetError, DatasetError, CheckpointError,
            distribute.DistributeError)


def main(argv):
    logging.set_verbosity(logging.WARNING)  # keep the console to progress lines
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}; flags are written --name=value")
    try:
        train(config_from_flags())
    except user_errors() as e:
        _fail(str(e))


def _fail(message):
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def parse_flags(argv):
    """absl's parser with our error convention: a misspelt flag or a bad value
    is one ``error:`` line and exit status 2 (absl's own is a FATAL line, a
    usage hint and status 1)."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        _fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)


def run():
    """Console script ``keras-zoo-train``."""
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()

