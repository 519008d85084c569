"""The ``qat`` config entry: plain JSON data, checked once, defaults filled in."""

import difflib

# Layer classes (matched by name anywhere in the class's MRO) whose arithmetic
# stays float: the int8 TFLite graph keeps normalisation statistics and
# softmax in float (export.tflite.INT8_FLOAT_OPS / INT8_FLOAT_SCOPES), so the
# training graph does too. Their outputs are still quantized for the int8
# layers that read them.
FLOAT_LAYERS = ("LayerNormalization", "RMSNormalization", "GroupNormalization",
                "UnitNormalization", "Softmax")

DEFAULTS = {
    "num_bits": 8,
    # "moving_average": min/max tracked by an exponential moving average of
    # each batch's extremes (Jacob et al. 2018); "learned": min/max trained by
    # the fake-quant gradient (PACT-style), starting from calibration.
    "ranges": "moving_average",
    "momentum": 0.99,
    # "per_channel": one symmetric scale per output channel for every
    # Dense/EinsumDense/Conv2D/DepthwiseConv2D kernel (what the TFLite
    # converter gives those ops when it quantizes their weights itself);
    # "per_tensor": one scale per kernel, written into the exported graph.
    "weights": "per_channel",
    # "fold": BatchNorm after a convolution is folded into it with its moving
    # statistics, in training as at export (the trained graph is the exported
    # one); "batch_stats": BatchNorm normalises with batch statistics while
    # training and is folded only for inference and export.
    "batchnorm": "fold",
    "float_layers": list(FLOAT_LAYERS),
    # Layer paths (as in quantization.describe(model)) or names kept float.
    "skip_layers": [],
    # Fine-tune against the float model's predictions (its softmax as soft
    # targets, Hinton et al. 2015) instead of the labels: the int8 model learns
    # to predict what the float model predicts. Classifiers (logits) only.
    "distill": False,
    # Magnitude pruning of the same kernels: None or {"sparsity": 0.5,
    # "begin_step": 0, "end_step": 1000, "frequency": 100, "power": 3}.
    "prune": None,
}

PRUNE_DEFAULTS = {"sparsity": 0.5, "begin_step": 0, "end_step": 1000, "frequency": 100,
                  "initial_sparsity": 0.0, "power": 3}


class QuantizationError(ValueError):
    """A model or config quantize_aware cannot handle; the message says what and why."""


def resolve(config):
    """``config`` (None, a dict of overrides, or a full config) -> a complete, checked dict."""
    if config is None or config is True:
        config = {}
    if not isinstance(config, dict):
        raise QuantizationError(f"qat config must be a dict of options, got {config!r}")
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        hints = {k: difflib.get_close_matches(k, DEFAULTS, n=1) for k in unknown}
        hint = "; ".join(f"{k!r} (did you mean {v[0]!r}?)" if v else repr(k)
                         for k, v in hints.items())
        raise QuantizationError(f"unknown qat option(s) {hint}; options are {sorted(DEFAULTS)}")
    out = {**DEFAULTS, **config}
    out["float_layers"] = list(out["float_layers"])
    out["skip_layers"] = list(out["skip_layers"])
    choices = {"ranges": ("moving_average", "learned"), "weights": ("per_channel", "per_tensor"),
               "batchnorm": ("fold", "batch_stats")}
    for key, allowed in choices.items():
        if out[key] not in allowed:
            raise QuantizationError(f"qat option {key}={out[key]!r}: expected one of {allowed}")
    if out["num_bits"] != 8:
        # TFLite integer kernels are 8-bit; other widths would train a graph
        # the exporter cannot reproduce.
        raise QuantizationError(f"num_bits={out['num_bits']!r}: TFLite integer kernels are "
                                "8-bit, so quantize_aware supports num_bits=8 only")
    if not isinstance(out["distill"], bool):
        raise QuantizationError(f"distill must be true or false, got {out['distill']!r}")
    if not 0.0 < out["momentum"] < 1.0:
        raise QuantizationError(f"momentum must be in (0, 1), got {out['momentum']!r}")
    if out["prune"] is not None:
        out["prune"] = resolve_prune(out["prune"])
    return out


def resolve_prune(prune):
    if isinstance(prune, (int, float)) and not isinstance(prune, bool):
        prune = {"sparsity": float(prune)}
    if not isinstance(prune, dict):
        raise QuantizationError(f"prune must be a sparsity or a dict, got {prune!r}")
    unknown = sorted(set(prune) - set(PRUNE_DEFAULTS))
    if unknown:
        raise QuantizationError(f"unknown prune option(s) {unknown}; options are "
                                f"{sorted(PRUNE_DEFAULTS)}")
    out = {**PRUNE_DEFAULTS, **prune}
    if not 0.0 <= out["initial_sparsity"] <= out["sparsity"] < 1.0:
        raise QuantizationError(
            f"prune sparsity must satisfy 0 <= initial_sparsity ({out['initial_sparsity']}) "
            f"<= sparsity ({out['sparsity']}) < 1")
    if out["begin_step"] < 0 or out["end_step"] <= out["begin_step"]:
        raise QuantizationError(f"prune needs 0 <= begin_step < end_step, got "
                                f"{out['begin_step']} and {out['end_step']}")
    if out["frequency"] < 1:
        raise QuantizationError(f"prune frequency must be >= 1 step, got {out['frequency']}")
    return out
