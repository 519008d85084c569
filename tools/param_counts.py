"""Builds every registry preset and writes its parameter counts to a results file.

    python tools/param_counts.py                 # -> docs/results/param_counts.json
    python tools/param_counts.py --families=ViT,ResNet

Counts are trainable weights (as the papers and torchvision count them; Keras'
``count_params()`` adds BatchNorm moving statistics), built from the config
alone: no weights are loaded or downloaded. tests/models/test_param_counts.py
pins the published ones; the documentation's preset tables render this file.
"""

import argparse
import gc
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="", help="comma-separated family names")
    parser.add_argument("--output", default=None, help="results file (default docs/results/)")
    args = parser.parse_args(argv)

    import keras

    import keras_zoo
    from keras_zoo import presets, results

    wanted = {f for f in args.families.split(",") if f}
    rows = []
    for name in keras_zoo.list_presets():
        preset = presets.get_preset(name)
        family = preset.family
        if wanted and family not in wanted:
            continue
        model = keras_zoo.from_preset(name, load_weights=False)
        trainable = model.trainable_parameter_count() if hasattr(
            model, "trainable_parameter_count") else sum(
            int(keras.ops.size(w)) for w in model.trainable_weights)
        rows.append([family, name, trainable, model.count_params(), bool(preset.tiny),
                     preset.description])
        print(f"{family:18s} {name:32s} {trainable:>14,d}", flush=True)
        del model
        keras.backend.clear_session()
        gc.collect()
    command = "python tools/param_counts.py" + (f" --families={args.families}"
                                                if args.families else "")
    path = results.write_results(
        "param_counts", command,
        {"presets": (["family", "preset", "trainable parameters", "count_params()", "tiny",
                      "description"], rows)},
        path=args.output)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
