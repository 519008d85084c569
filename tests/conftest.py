"""Test-wide settings: quiet TensorFlow, deterministic seeds, CPU only."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# No test downloads: hf:// and kaggle:// read only caches the tests lay out
# (tests/converters/conftest.py); an empty cache gives the one-line error.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["KERAS_ZOO_OFFLINE"] = "1"  # kaggle:// too (kagglehub has no offline switch)
_EMPTY_CACHES = __import__("tempfile").mkdtemp(prefix="keras_zoo_tests_hub_caches_")
os.environ["HF_HUB_CACHE"] = os.path.join(_EMPTY_CACHES, "huggingface")
os.environ["KAGGLEHUB_CACHE"] = os.path.join(_EMPTY_CACHES, "kagglehub")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield


def _finish(proc, what, timeout=1800):
    """(stdout, stderr) of a subprocess.Popen under a generous limit: a test
    never races a run time (they grow with the machine's load), and a hang
    fails with a message naming what hung instead of a bare TimeoutExpired."""
    import subprocess

    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"{what} did not finish within {timeout} s (the machine is overloaded, "
                    "or it hangs)")


@pytest.fixture
def finish():
    """``finish(proc, what, timeout=1800) -> (stdout, stderr)``; see ``_finish``."""
    return _finish
