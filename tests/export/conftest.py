"""Digit classifiers trained once per test run, shared by the export tests.

Full-int8 agreement is only meaningful on a trained model (a random one
has near-tied logits that any rounding flips). Each model trains for a few
epochs on the bundled digits and is saved as a preset folder in a directory
all pytest-xdist workers share; the first worker to need a model trains it
while the others wait on a lock folder.
"""

import os
import shutil
import time

import pytest

import keras_zoo
from export.report import DIGIT_RECIPES, randomise_weights, train_classifier


def _shared_dir(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # one folder for all workers of this run
    path = base / "trained_digits"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def trained_preset(tmp_path_factory):
    """``trained_preset(name)`` -> a preset folder with trained weights."""
    root = _shared_dir(tmp_path_factory)

    def get(name):
        folder, lock = root / name, root / f"{name}.lock"
        deadline = time.time() + 3600  # training takes ~1 minute; generous under load
        while not (folder / "manifest.json").exists():
            try:
                os.mkdir(lock)
            except FileExistsError:
                if time.time() > deadline:
                    pytest.fail(f"another worker has held {lock} for an hour: it is hung or "
                                "was killed (remove the lock folder)")
                time.sleep(1)
                continue
            try:
                tmp = root / f".{name}.partial"
                shutil.rmtree(tmp, ignore_errors=True)
                model = keras_zoo.from_preset(name)
                train_classifier(model, *DIGIT_RECIPES[name])
                model.save_to_preset(str(tmp))
                os.replace(tmp, folder)
            finally:
                os.rmdir(lock)
        return str(folder)
    return get


@pytest.fixture
def randomise():
    """``randomise(model)``: fixed non-trivial weights in place (zero-initialised
    heads would make every output 0 and every comparison pass)."""
    return randomise_weights
