"""The evaluation protocol: best/ is chosen on a validation split held out of the
training data, and the test split is scored once, at the end, with best/'s weights."""

import json

import numpy as np
import pytest

import keras_zoo
from experiments import train as trainer
from keras_zoo.data import datasets, load_arrays


def _file_train():
    with np.load(f"{datasets.BUNDLED_DIR}/digits.npz") as f:
        return f["x_train"], f["y_train"]


def test_digits_validation_is_disjoint_stratified_and_deterministic():
    x_file, y_file = _file_train()
    mask = datasets.stratified_holdout(y_file, 18, datasets.VALIDATION_SEED)
    assert mask.sum() == 180
    # stratified: exactly 18 of every class
    np.testing.assert_array_equal(np.bincount(y_file[mask], minlength=10), [18] * 10)
    # the loader's splits are the mask's two sides, in file order: disjoint, and
    # together the file's 1,437 training images
    x_train, y_train, _ = load_arrays("digits:train", "train", 8, 1)
    x_val, y_val, info = load_arrays("digits:validation", "train", 8, 1)
    assert (len(x_train), len(x_val), info.split) == (1257, 180, "validation")
    scale = datasets._BUNDLED_INFO["digits"]["max_value"]
    np.testing.assert_array_equal(x_val[..., 0] * scale, x_file[mask])
    np.testing.assert_array_equal(x_train[..., 0] * scale, x_file[~mask])
    np.testing.assert_array_equal(y_val, y_file[mask])
    # "digits" alone is the training split
    assert datasets.load("digits")[1].num_examples == 1257
    # deterministic: the same mask every call; another seed gives another one
    np.testing.assert_array_equal(mask, datasets.stratified_holdout(y_file, 18, 0))
    assert (mask != datasets.stratified_holdout(y_file, 18, 1)).any()


def test_holdout_refuses_a_class_too_small():
    with pytest.raises(datasets.DatasetError, match="class 1 has 2 examples"):
        datasets.stratified_holdout([0, 0, 0, 1, 1], 2, 0)


def test_default_splits():
    assert trainer.default_splits("digits") == ("digits", "digits:validation", "digits:test")
    assert trainer.default_splits("gettext_packages") == (
        "gettext_packages", "gettext_packages:validation", "gettext_packages:test")


@pytest.mark.parametrize("splits, expected", [
    ({"train", "validation", "test"}, ("tfds:x", "tfds:x:validation", "tfds:x:test")),
    # no validation split: the last 10 % of train, training on the rest
    ({"train", "test"}, ("tfds:x:train[:-10%]", "tfds:x:train[-10%:]", "tfds:x:test")),
    # no test split (ImageNet): validation is the test set, selection on a holdout
    ({"train", "validation"},
     ("tfds:x:train[:-10%]", "tfds:x:train[-10%:]", "tfds:x:validation")),
])
def test_default_splits_of_tfds_sets(monkeypatch, splits, expected):
    monkeypatch.setattr(trainer, "_tfds_splits", lambda name, data_dir: splits)
    assert trainer.default_splits("tfds:x") == expected
    if "validation" not in splits:
        with pytest.raises(trainer.TrainError, match="no validation split"):
            trainer.default_splits("tfds:x:train[:50%]")
        # validation named by the user: nothing is carved from the training split
        assert trainer.default_splits("tfds:x:train[:50%]", validation_given=True) == \
            ("tfds:x:train[:50%]", "none", expected[2])


def test_eval_dataset_is_the_older_name_of_validation_dataset():
    assert trainer.resolve({"preset": "lenet5", "epochs": 1, "model_dir": "/tmp/unused",
                            "eval_dataset": "none"})["validation_dataset"] == "none"
    with pytest.raises(trainer.TrainError, match="name the same thing"):
        trainer.resolve({"preset": "lenet5", "epochs": 1, "eval_dataset": "none",
                         "validation_dataset": "digits:validation"})


def test_validation_and_test_must_differ(tmp_path):
    with pytest.raises(trainer.TrainError, match="both 'digits:test'"):
        trainer.train({"preset": "lenet5", "epochs": 1, "model_dir": str(tmp_path),
                       "validation_dataset": "digits:test"})


def test_best_is_chosen_on_validation_and_test_is_scored_once_with_it(tmp_path):
    """Validation here is random labels (synthetic), so the epoch it prefers is
    unrelated to the test split's: best/ must be the validation argmax, and the
    test number must be best/'s, whatever the test split would have preferred."""
    model_dir = tmp_path / "run"
    result = trainer.train({
        "preset": "lenet5", "dataset": "digits", "train_steps": 12, "eval_every": 3,
        "global_batch_size": 64, "learning_rate": 3e-3, "model_dir": str(model_dir),
        "validation_dataset": "synthetic:200"})
    saved = json.loads((model_dir / "metrics.json").read_text())
    results, history = saved["results"], saved["history"]
    assert results["validation_dataset"] == {"spec": "synthetic:200", "examples": 200}
    assert results["test_dataset"] == {"spec": "digits:test", "examples": 360}
    assert results["train_dataset"] == {"spec": "digits", "examples": 1257}
    assert results["test_weights"] == "best"
    # the monitored curve is the validation one, and best/ is its (first) maximum
    val = history["val_accuracy"]
    assert results["best"]["monitor"] == "val_accuracy"
    assert results["best"]["epoch"] == int(np.argmax(val)) + 1
    assert results["best"]["value"] == pytest.approx(max(val))
    assert not any("test" in key for key in history)  # test never enters the curves
    # the test number is best/'s accuracy on the 360 test images
    x, y, _ = load_arrays("digits:test", "test", 32, 1)
    best = keras_zoo.from_preset(str(model_dir / "best"))
    expected = float(np.mean(np.argmax(best.predict(x, verbose=0), -1) == y))
    assert result["test_accuracy"] == pytest.approx(expected, abs=1e-6)
    assert results["test_metrics"]["accuracy"] == pytest.approx(expected, abs=1e-6)
    # the returned model is the trained one (last/), not the reloaded best/
    last = keras_zoo.from_preset(str(model_dir / "last"))
    for a, b in zip(result["model"].get_weights(), last.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_resume_keeps_the_split(tmp_path):
    config = {"preset": "lenet5", "dataset": "digits", "global_batch_size": 64,
              "learning_rate": 3e-3, "model_dir": str(tmp_path), "train_steps": 4,
              "eval_every": 4, "test_dataset": "none"}
    first = trainer.train(config)
    resumed = trainer.train({**config, "train_steps": 8})
    assert resumed["start_step"] == 4 and resumed["steps"] == 8
    for key in ("train_dataset", "validation_dataset"):
        assert resumed[key] == first[key]
    assert first["validation_dataset"] == {"spec": "digits:validation", "examples": 180}
    assert resumed["test_dataset"]["spec"] == "none" and resumed["test_metrics"] == {}
