"""Argument checks shared by the text families' entry points (predict, generate,
translate): one line naming the argument, the value and what was expected,
instead of a deep traceback or a silently wrong result. Backend-neutral."""

import math
import numbers

import keras
import numpy as np


def check_token_ids(values, vocab_size, what="token ids"):
    """Concrete ids must be integers in 0..vocab_size-1: a float id would be
    truncated and -1 would wrap to the last row of the embedding table.
    Symbolic tensors pass unchecked."""
    if keras.backend.is_keras_tensor(values):
        return
    try:
        values = np.asarray(values)
    except Exception:  # noqa: BLE001  (a symbolic tensor of a traced function: no values)
        return
    if values.dtype == object or not values.size:
        return
    if not (np.issubdtype(values.dtype, np.integer) or values.dtype == bool):
        raise TypeError(f"{what} must be integers (int32), got {values.dtype} values such as "
                        f"{values.reshape(-1)[:3].tolist()}")
    bad = values[(values < 0) | (values >= vocab_size)]
    if bad.size:
        raise ValueError(f"{what} {sorted(set(bad.tolist()))[:5]} are outside the vocabulary "
                         f"(0..{vocab_size - 1})")


def check_count(name, value, minimum=1, allow_none=False):
    """An integer argument such as ``max_length`` or ``batch_size``: a bool or
    float is a TypeError, a value below ``minimum`` a ValueError."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}"
                        f"{' or None' if allow_none else ''}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def check_texts(texts, what):
    """A string or a non-empty list of strings (no bytes, None or lone
    surrogates, which no tokenizer can encode as UTF-8)."""
    items = [texts] if isinstance(texts, str) else texts
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"{what} takes a string or a list of strings, got "
                        f"{type(texts).__name__}")
    if not items:
        raise ValueError(f"{what} got no texts")
    for i, t in enumerate(items):
        if not isinstance(t, str):
            hint = " (decode bytes first: b.decode('utf-8'))" if isinstance(t, bytes) else ""
            raise TypeError(f"{what}: text {i} is {type(t).__name__}, not str{hint}")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"{what}: text {i} is not valid Unicode ({e.reason} at "
                             f"position {e.start}: a lone surrogate)") from None


def check_id_lists(ids, what, allow_empty_rows=False):
    """A list of token-id lists (not a flat list of ints, not floats)."""
    if isinstance(ids, np.ndarray):
        ids = ids.tolist() if ids.ndim == 2 else ids
    if not isinstance(ids, (list, tuple)):
        raise TypeError(f"{what} takes a list of token-id lists, got {type(ids).__name__}")
    if not ids:
        raise ValueError(f"{what} got no sequences")
    for i, row in enumerate(ids):
        if isinstance(row, numbers.Number):
            raise TypeError(f"{what} takes a list of token-id lists; got a flat list of ids "
                            f"(wrap one sequence as [[...]])")
        if isinstance(row, np.ndarray):
            row = row.tolist()
        if not isinstance(row, (list, tuple)):
            raise TypeError(f"{what}: sequence {i} is {type(row).__name__}, not a list of ids")
        if not row and not allow_empty_rows:
            raise ValueError(f"{what}: sequence {i} is empty (give at least one token)")
        for t in row:
            if isinstance(t, bool) or not isinstance(t, numbers.Integral):
                raise TypeError(f"{what}: sequence {i} holds {t!r}; token ids are integers")


def check_sampling(temperature, top_k, top_p, vocab_size):
    """generate()'s sampling knobs: finite temperature > 0, 1 <= top_k <=
    vocabulary, 0 < top_p <= 1 (None: the sampler does not use it)."""
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) \
            or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if top_k is not None:
        check_count("top_k", top_k)
        if top_k > vocab_size:
            raise ValueError(f"top_k={top_k} is larger than the vocabulary ({vocab_size} "
                             "tokens)")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, numbers.Real)
                              or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
