"""Magnitude pruning of the quantize-aware kernels (Zhu & Gupta 2017, "To prune,
or not to prune"): each kernel computes as ``kernel * mask``; every
``frequency`` steps between ``begin_step`` and ``end_step`` the mask keeps
the largest-magnitude weights of each kernel, with the sparsity following
s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_end - t_0)) ** power (power 3:
prune fast while the weights are redundant, slowly near the end)."""

import keras
import numpy as np

from keras_zoo.quantization.config import QuantizationError


def target_sparsity(step, prune):
    t0, t1 = prune["begin_step"], prune["end_step"]
    if step < t0:
        return 0.0
    progress = min(1.0, (step - t0) / (t1 - t0))
    s_i, s_f = prune["initial_sparsity"], prune["sparsity"]
    return s_f + (s_i - s_f) * (1.0 - progress) ** prune["power"]


def pruned_layers(model):
    """[(layer, mask variable)] of a quantize-aware model with pruning."""
    from keras_zoo.quantization.core import get_state

    state = get_state(model)
    if state is None or not state.pruned:
        return []
    plan = vars(model)["_qat_plan"]
    by_path = {p.path: layer for layer, p in plan.layers.values()}
    return [(by_path[path], mask) for (path, _), mask in zip(state.pruned, state.masks)]


def update_masks(model, sparsity):
    """Sets every mask to keep the (1 - sparsity) largest |kernel * mask| entries
    of its kernel (already pruned weights stay pruned). Returns the sparsity reached."""
    zeros = total = 0
    for layer, mask in pruned_layers(model):
        w = np.abs(keras.ops.convert_to_numpy(layer.kernel) *
                   keras.ops.convert_to_numpy(mask))
        k = round(sparsity * w.size)
        new = np.ones_like(w)
        if k > 0:
            order = np.argsort(w, axis=None, kind="stable")[:k]
            new.reshape(-1)[order] = 0.0
        mask.assign(new)
        zeros += k
        total += w.size
    return zeros / total if total else 0.0


def sparsity_of(model):
    """Fraction of zeros in the effective (masked) pruned kernels."""
    zeros = total = 0
    for layer, mask in pruned_layers(model):
        m = keras.ops.convert_to_numpy(mask)
        zeros += int(m.size - np.count_nonzero(m))
        total += m.size
    return zeros / total if total else 0.0


class PruningCallback(keras.callbacks.Callback):
    """Updates the masks on the polynomial schedule, from the optimizer's step
    count (so a resumed run continues the schedule where it stopped)."""

    def __init__(self, prune):
        super().__init__()
        self.prune = prune
        self._next = None
        self._done = False

    def on_train_batch_begin(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if step < self.prune["begin_step"] or self._done:
            return
        if self._next is None or step >= self._next or step >= self.prune["end_step"]:
            update_masks(self.model, target_sparsity(step, self.prune))
            self._next = step + self.prune["frequency"]
            self._done = step >= self.prune["end_step"]


def callbacks(model):
    """The callbacks a quantize-aware model needs in ``fit`` (pruning, if configured)."""
    from keras_zoo.quantization.core import get_state

    state = get_state(model)
    if state is None:
        raise QuantizationError(f"model {model.name!r} is not quantize-aware")
    prune = state.qat_config.get("prune")
    return [PruningCallback(prune)] if prune else []
