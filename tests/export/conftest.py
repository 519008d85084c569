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

import keras
import numpy as np
import pytest

import keras_zoo
from keras_zoo.data import datasets

# preset -> (epochs, learning rate, batch): ~98 % test accuracy or better
# except the ViT (~93 %), in tens of seconds on one CPU core.
RECIPES = {
    "lenet5": (8, 3e-3, 32),
    "resnet_tiny_digits": (2, 3e-3, 32),
    "vit_tiny_digits": (12, 2e-3, 32),
}


def train_digits(preset, epochs, learning_rate, batch_size, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras_zoo.from_preset(preset)
    x, y, _ = datasets.load_arrays("digits", "train", 32, 1)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), jit_compile=True,
                  **model.compile_defaults())
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
    return model


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
        deadline = time.time() + 600
        while not (folder / "manifest.json").exists():
            try:
                os.mkdir(lock)
            except FileExistsError:
                if time.time() > deadline:
                    raise TimeoutError(f"another worker has held {lock} for 10 minutes")
                time.sleep(1)
                continue
            try:
                tmp = root / f".{name}.partial"
                shutil.rmtree(tmp, ignore_errors=True)
                train_digits(name, *RECIPES[name]).save_to_preset(str(tmp))
                os.replace(tmp, folder)
            finally:
                os.rmdir(lock)
        return str(folder)
    return get


@pytest.fixture
def randomise():
    """``randomise(model)``: non-trivial weights in place; returns the model."""
    return _randomise


def _randomise(model, seed=0):
    """Non-trivial weights for parity checks (zero-initialised heads would
    make every output 0 and every comparison pass). BatchNorm variances stay
    positive."""
    rng = np.random.default_rng(seed)
    weights = []
    for variable in model.weights:
        w = np.asarray(variable)
        noise = rng.normal(0, 0.1, w.shape).astype(w.dtype) if w.dtype.kind == "f" else 0
        w = w + noise
        if "variance" in variable.path:
            w = np.abs(w) + 0.5
        weights.append(w)
    for variable, w in zip(model.weights, weights):
        variable.assign(w)
    return model
