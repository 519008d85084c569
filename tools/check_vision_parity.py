"""Prints max |keras_zoo - reference| / max |reference| for each vision fixture
of tests/fixtures/hf_vision (the README's "Sources and verified parity" numbers):

    python tools/check_vision_parity.py
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import keras_zoo  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "hf_vision")
OUTPUTS = {"vit_classifier": "logits", "vit_dino": "cls", "vit_pooler_no_qkv_bias": "cls",
           "resnet_bottleneck": "logits", "resnet_basic": "logits", "timm_vit": "logits",
           "timm_resnet": "logits"}


def relative_error(actual, expected):
    return float(np.abs(np.asarray(actual) - expected).max() / np.abs(expected).max())


def main():
    for name, key in OUTPUTS.items():
        path = os.path.join(FIXTURES, name)
        ref = np.load(os.path.join(path, "reference.npz"))
        model = keras_zoo.from_preset("hf:" + path)
        images = model.predict(ref["images"], verbose=0)
        raw = model.predict(keras_zoo.preprocess_images(model, list(ref["raw_images"])),
                            verbose=0)
        print(f"{name:24s} {key:7s} {relative_error(images, ref[key]):.1e}  "
              f"raw photo {relative_error(raw, ref['raw_outputs']):.1e}")
    path = os.path.join(FIXTURES, "vit_mae")
    ref = np.load(os.path.join(path, "reference.npz"))
    model = keras_zoo.from_preset("hf:" + path)
    out = model.forward(ref["images"], noise=ref["noise"])
    unmasked = model.encoder().predict(ref["images"], verbose=0)
    print(f"vit_mae decoder {relative_error(out['reconstruction'], ref['logits']):.1e}  "
          f"encoder(visible) {relative_error(out['encoded'], ref['encoded_visible']):.1e}  "
          f"encoder(all) {relative_error(unmasked, ref['encoded']):.1e}")


if __name__ == "__main__":
    main()
