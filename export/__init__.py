"""Edge export for keras_zoo models: SavedModel and TFLite (float32, float16,
dynamic-range int8, full int8), verified against Keras and benchmarked.

    from export import export_model, load_model, verify_export
    model = load_model(preset="vit_tiny_digits")
    result = export_model(model, "vit.tflite", quantization="int8",
                          representative_data="digits:train")
    verify_export(model, result)     # max abs diff, top-1 agreement, accuracy

CLI: ``python -m export.export --help``; report: ``python -m export.report``.
"""

from export.export import export_model, export_tflite, keras_int8, load_model, verify_export
from export.tflite import QUANTIZATIONS, ExportError
from export.verify import benchmark

__all__ = ["QUANTIZATIONS", "ExportError", "benchmark", "export_model", "export_tflite",
           "keras_int8", "load_model", "verify_export"]
