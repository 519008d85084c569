"""Entry point Bazel's py_test targets run: pytest on the file named in args."""

import sys

import pytest

if __name__ == "__main__":
    sys.exit(pytest.main(["-q", *sys.argv[1:]]))
