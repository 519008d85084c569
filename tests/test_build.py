"""BUILD must name every module and every test file (Bazel users build from it)."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tracked_python(folder):
    out = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, folder)):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        out += [os.path.relpath(os.path.join(dirpath, f), ROOT)
                for f in filenames if f.endswith(".py")]
    return out


def _build():
    with open(os.path.join(ROOT, "BUILD")) as f:
        return f.read()


def test_every_module_is_in_a_target():
    named = set(re.findall(r'"([\w/]+\.py)"', _build()))
    missing = [f for folder in ("keras_zoo", "experiments", "export", "benchmarks", "tests")
               for f in _tracked_python(folder) if f not in named]
    assert not missing, f"not named by any BUILD target (run tools/update_build.py): {missing}"


def test_every_test_file_has_a_py_test():
    tests = set(re.findall(r'py_test\(\s*name = "\w+",\s*srcs = \["([\w/]+\.py)"\]', _build()))
    missing = [f for f in _tracked_python("tests")
               if os.path.basename(f).startswith("test_") and f not in tests]
    assert not missing, f"test files without a py_test target: {missing}"


def test_test_modules_have_unique_names():
    """tests/ has no __init__.py files: pytest imports each test module by its
    basename, and two with one name break collection of the whole suite."""
    names = {}
    for folder, _, files in os.walk(os.path.dirname(__file__)):
        for name in files:
            if name.startswith("test_") and name.endswith(".py"):
                names.setdefault(name, []).append(os.path.join(folder, name))
    assert {n: p for n, p in names.items() if len(p) > 1} == {}
