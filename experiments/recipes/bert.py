r"""BERT recipe, offline on CPU: pre-training on english_prose, fine-tuning on gettext_packages.

    python -m experiments.recipes.bert --output_dir=/tmp/bert_recipe

1. Pre-trains BERT-Tiny with masked LM + next-sentence prediction on the
   training documents of english_prose (experiments/configs/
   bert_tiny_prose_pretraining.py, through experiments.train; best/ chosen on
   the validation documents), then scores best/ once on its test documents:
   masked-LM accuracy at the chosen positions against the
   frequency baseline (always predict the token that is most often chosen in
   the training split), and NSP accuracy against 50 %.
2. Fine-tunes on gettext_packages (which of 8 packages an English gettext
   message comes from; experiments/configs/bert_tiny_gettext_packages.py):
   the pre-trained model (its vocabulary, a new head) and the same
   architecture from scratch (a vocabulary trained on the messages). best/
   of each is chosen on the validation messages; the trainer scores it once
   on the test messages.
3. The baseline on the same split: bag-of-words (word unigrams + bigrams,
   tf-idf) logistic regression, C picked on the validation split.
4. (stage ``curve``, not in the default stages) Validation accuracy against
   the number of labelled training messages: the pre-trained model
   fine-tuned (same config, same number of epochs) and the bag of words (C
   chosen on validation) on seeded class-balanced subsets of
   ``--curve_fractions`` of the training messages; validation only, the test
   split is not read.
5. Exports the pre-trained fine-tuned classifier to TFLite in the four
   modes (calibrated on training messages) and reports each file's
   agreement with Keras and accuracy on the test messages.

Numbers and wall times go to stdout and ``results.json`` in ``--output_dir``;
the runs (presets best/ and last/, metrics, curves) sit beside it.
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from absl import app, flags

import keras_zoo
from experiments import train as trainer

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINING = os.path.join(HERE, "configs", "bert_tiny_prose_pretraining.py")
FINE_TUNING = os.path.join(HERE, "configs", "bert_tiny_gettext_packages.py")

flags.DEFINE_string("output_dir", "/tmp/bert_recipe", "Where the runs and results.json go.")
flags.DEFINE_integer("pretraining_epochs", None, "Override the pre-training config's epochs.")
flags.DEFINE_integer("fine_tuning_epochs", None, "Override the fine-tuning config's epochs.")
flags.DEFINE_list("stages", ["pretrain", "finetune", "baseline", "export"],
                  "Stages to run (a later stage reuses an earlier one's run folder).")
flags.DEFINE_list("finetune_runs", ["pretrained", "from_scratch"], "Which fine-tuning "
                  "runs the 'finetune' stage makes (from_scratch needs no pre-training).")
flags.DEFINE_list("curve_fractions", ["0.125", "0.25", "0.5"], "Fractions of the "
                  "training messages of the 'curve' stage.")
FLAGS = flags.FLAGS


def _config(path, **changes):
    config = trainer.load_config_file(path)
    config.update({k: v for k, v in changes.items() if v is not None})
    return config


def _load_average():
    return round(os.getloadavg()[0], 1)


def pretraining_scores(model, batch_size=64):
    """MLM accuracy at the chosen positions and NSP accuracy on english_prose:test,
    and the frequency baseline (the most frequent chosen token of the training
    split, scored on the test split's chosen tokens)."""
    counts = {}
    train, info = model.load_data("english_prose", "train")
    for _, y, w in model.batch_data(train, info, batch_size, training=False):
        labels = y["mlm"].numpy()[w["mlm"].numpy() > 0]
        for token, n in zip(*np.unique(labels, return_counts=True)):
            counts[int(token)] = counts.get(int(token), 0) + int(n)
    most_frequent = max(counts, key=counts.get)
    test, info = model.load_data("english_prose", "test")
    hits = total = nsp_hits = nsp_total = baseline_hits = 0
    for x, y, w in model.batch_data(test, info, batch_size, training=False):
        out = model(x, training=False)
        weights, labels = w["mlm"].numpy(), y["mlm"].numpy()
        predicted = np.asarray(out["mlm"]).argmax(-1)
        hits += int(((predicted == labels) * weights).sum())
        baseline_hits += int(((labels == most_frequent) * weights).sum())
        total += int(weights.sum())
        real = w["nsp"].numpy() > 0
        nsp_hits += int((np.asarray(out["nsp"]).argmax(-1) == y["nsp"].numpy())[real].sum())
        nsp_total += int(real.sum())
    return {"mlm_accuracy": hits / total, "mlm_predictions": total,
            "frequency_baseline": baseline_hits / total,
            "most_frequent_token": model.tokenizer.id_to_token(most_frequent),
            "nsp_accuracy": nsp_hits / nsp_total, "nsp_pairs": nsp_total}


def _messages(name):
    from keras_zoo.data import text

    ds, _ = text.load("gettext_packages", name)
    rows = list(ds.as_numpy_iterator())
    return [r["text"].decode() for r in rows], np.array([r["label"] for r in rows])


def _bag_of_words(x_train, y_train, x_val, y_val):
    """(validation accuracy, C, vectorizer, classifier): C chosen on validation."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    train_features = vectorizer.fit_transform(x_train)
    best = None
    for c in (0.3, 1.0, 3.0, 10.0, 30.0):
        classifier = LogisticRegression(C=c, max_iter=3000).fit(train_features, y_train)
        accuracy = classifier.score(vectorizer.transform(x_val), y_val)
        if best is None or accuracy > best[0]:
            best = (accuracy, c, vectorizer, classifier)
    return best


def balanced_subset(labels, fraction, seed=0):
    """Indices of a seeded subset with ``fraction`` of every class."""
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([
        rng.permutation(members)[:max(1, round(fraction * len(members)))]
        for members in (np.flatnonzero(labels == c) for c in np.unique(labels))]))


def fine_tune_subset(preset, texts, labels, epochs):
    """The fine-tuning config's model, optimizer and epochs on a subset of the
    training messages (the trainer's model and optimizer code, in-process);
    returns the best validation accuracy over the epochs and its epoch."""
    import dataclasses

    import keras
    import tensorflow as tf

    c = trainer.resolve(_config(FINE_TUNING, preset=preset, model_dir="/tmp/unused",
                                epochs=epochs))
    keras.utils.set_random_seed(c["seed"])
    model = trainer.build_model(c, 8)
    _, info = model.load_data("gettext_packages", "train")
    subset = tf.data.Dataset.from_tensor_slices({"text": texts, "label": labels})
    info = dataclasses.replace(info, num_examples=len(texts))
    model.prepare_data(subset, info, None)
    steps = model.steps_per_pass(info, c["global_batch_size"])
    optimizer, _ = trainer.make_optimizer(c, c["epochs"] * steps, model)
    args = dict(model.compile_defaults())
    args["weighted_metrics"] = args.pop("metrics")
    model.compile(optimizer=optimizer, **args)
    val, val_info = model.load_data("gettext_packages:validation", "validation")
    val_ds = model.batch_data(val, val_info, c["global_batch_size"], training=False)
    train_ds = model.batch_data(subset.shuffle(len(texts), seed=c["seed"]), info,
                                c["global_batch_size"], training=True)
    history = model.fit(train_ds, epochs=c["epochs"], validation_data=val_ds, verbose=0)
    curve = history.history["val_accuracy"]
    return {"best_validation_accuracy": float(max(curve)),
            "best_epoch": int(np.argmax(curve)) + 1, "steps": c["epochs"] * steps}


def learning_curve(pretrained, fractions):
    """Validation accuracy vs labelled training messages: fine-tuned pre-trained
    BERT-Tiny and the bag of words, on the same class-balanced subsets."""
    x_train, y_train = _messages("train")
    x_val, y_val = _messages("validation")
    rows = []
    for fraction in fractions:
        keep = balanced_subset(y_train, fraction)
        texts, labels = [x_train[i] for i in keep], y_train[keep]
        started = time.time()
        bow = _bag_of_words(texts, labels, x_val, y_val)
        row = {"fraction": fraction, "messages": len(keep),
               "bag_of_words_validation": bow[0], "bag_of_words_C": bow[1]}
        row["bert_pretrained"] = fine_tune_subset(
            pretrained, texts, labels, FLAGS.fine_tuning_epochs or 6)
        row["wall_seconds"] = round(time.time() - started, 1)
        rows.append(row)
        print("curve", json.dumps(row), flush=True)
    return rows


def bag_of_words_baseline():
    """tf-idf of word unigrams and bigrams + logistic regression; C chosen on validation."""
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (
        _messages(s) for s in ("train", "validation", "test"))
    accuracy, c, vectorizer, classifier = _bag_of_words(x_train, y_train, x_val, y_val)
    best = (accuracy, c, classifier)
    return {"validation_accuracy": best[0], "C": best[1],
            "test_accuracy": best[2].score(vectorizer.transform(x_test), y_test),
            "train_dataset": {"spec": "gettext_packages:train", "examples": len(y_train)},
            "validation_dataset": {"spec": "gettext_packages:validation",
                                   "examples": len(y_val)},
            "test_dataset": {"spec": "gettext_packages:test", "examples": len(y_test)}}


def main(argv):
    del argv
    out = FLAGS.output_dir
    os.makedirs(out, exist_ok=True)
    results_path = os.path.join(out, "results.json")
    results = {}
    if os.path.exists(results_path):  # a re-run of some stages keeps the others' numbers
        with open(results_path) as f:
            results = json.load(f)

    def save():
        with open(results_path, "w") as f:
            json.dump(results, f, indent=2)

    pretrain_dir = os.path.join(out, "pretrain")
    if "pretrain" in FLAGS.stages:
        started, load = time.time(), _load_average()
        # the test documents are scored once, below, by pretraining_scores
        run = trainer.train(_config(PRETRAINING, model_dir=pretrain_dir,
                                    epochs=FLAGS.pretraining_epochs, test_dataset="none"))
        model = keras_zoo.from_preset(os.path.join(pretrain_dir, "best"))
        scores = pretraining_scores(model)
        results["pretraining"] = {**scores, "steps": run["steps"], "scored": "best/",
                                  "best_validation": run.get("best"),
                                  "train_dataset": run["train_dataset"],
                                  "validation_dataset": run["validation_dataset"],
                                  "test_dataset": {"spec": "english_prose:test",
                                                   "examples": "documents; see "
                                                   "mlm_predictions, nsp_pairs"},
                                  "train_seconds": run["train_seconds"],
                                  "wall_seconds": round(time.time() - started, 1),
                                  "load_average_start_end": [load, _load_average()]}
        save()
        print(json.dumps(results["pretraining"], indent=2), flush=True)

    if "finetune" in FLAGS.stages:
        for name, preset in (("pretrained", os.path.join(pretrain_dir, "best")),
                             ("from_scratch", None)):
            if name not in FLAGS.finetune_runs:
                continue
            started, load = time.time(), _load_average()
            config = _config(FINE_TUNING, model_dir=os.path.join(out, f"finetune_{name}"),
                             epochs=FLAGS.fine_tuning_epochs, preset=preset)
            run = trainer.train(config)  # best/ on validation, then test once with it
            results[f"finetune_{name}"] = {
                "test_accuracy": run["test_accuracy"],
                "test_messages": run["test_dataset"]["examples"],
                "test_weights": run["test_weights"], "steps": run["steps"],
                "train_dataset": run["train_dataset"],
                "validation_dataset": run["validation_dataset"],
                "test_dataset": run["test_dataset"],
                "best_validation": run["best"], "train_seconds": run["train_seconds"],
                "wall_seconds": round(time.time() - started, 1),
                "load_average_start_end": [load, _load_average()]}
            save()
            print(name, json.dumps(results[f"finetune_{name}"]), flush=True)

    if "baseline" in FLAGS.stages:
        started = time.time()
        results["bag_of_words_logistic_regression"] = {
            **bag_of_words_baseline(), "wall_seconds": round(time.time() - started, 1)}
        save()
        print(json.dumps(results["bag_of_words_logistic_regression"]), flush=True)

    if "curve" in FLAGS.stages:
        started, load = time.time(), _load_average()
        results["curve_validation"] = {
            "rows": learning_curve(os.path.join(pretrain_dir, "best"),
                                   [float(f) for f in FLAGS.curve_fractions]),
            "wall_seconds": round(time.time() - started, 1),
            "load_average_start_end": [load, _load_average()]}
        save()

    if "export" in FLAGS.stages:
        from export import export_tflite, verify_export

        model = keras_zoo.from_preset(os.path.join(out, "finetune_pretrained", "best"))
        modes = ("none", "float16", "dynamic_int8", "int8")
        files = export_tflite(model, {q: os.path.join(out, f"classifier_{q}.tflite")
                                      for q in modes},
                              representative_data="gettext_packages:train",
                              calibration_samples=200)
        results["tflite"] = {}
        for q, result in files.items():
            report = verify_export(model, result, "gettext_packages:test",
                                   num_samples=376)["serving_default"]
            results["tflite"][q] = {"size_bytes": result["size_bytes"], **report}
            print(q, json.dumps(results["tflite"][q]), flush=True)
        save()


if __name__ == "__main__":
    app.run(main)
