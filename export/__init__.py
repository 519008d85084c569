"""Edge export for keras_zoo models: SavedModel and TFLite (float32, float16,
dynamic-range int8, full int8), verified against Keras and benchmarked; LiteRT-LM
bundles (.litertlm) of language models.

    from export import export_model, load_model, verify_export
    model = load_model(preset="vit_tiny_digits")
    result = export_model(model, "vit.tflite", quantization="int8",
                          representative_data="digits:train")
    verify_export(model, result)     # max abs diff, top-1 agreement, accuracy

CLI: ``python -m export.export --help``; report: ``python -m export.report``.
"""

import importlib

_API = {
    "export_model": "export.export", "export_tflite": "export.export",
    "keras_int8": "export.export", "load_model": "export.export",
    "verify_export": "export.export", "benchmark": "export.verify",
    "QUANTIZATIONS": "export.tflite", "ExportError": "export.tflite",
    "export_litertlm": "export.litertlm", "LiteRTLMGenerator": "export.litertlm",
}


def __getattr__(name):
    # Lazy, so that `python -m export.export` does not import export.export twice.
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")


__all__ = ["QUANTIZATIONS", "ExportError", "LiteRTLMGenerator", "benchmark", "export_litertlm",
           "export_model", "export_tflite", "keras_int8", "load_model", "verify_export"]
