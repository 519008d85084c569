"""Writes tests/fixtures/dino/positions.npz: facebookresearch/dino's position
resampling of the local crops, computed with torch.

    /work/torchenv/bin/python tools/make_dino_fixtures.py

Needs torch; the tests do not. ``VisionTransformer.interpolate_pos_encoding``
resamples the (sqrt N x sqrt N) patch-position grid with
``nn.functional.interpolate(mode="bicubic", scale_factor=(w0 + 0.1) / sqrt N)``
(the +0.1 avoids a floating-point off-by-one in the output size; it also
moves the sampling points, since torch samples at (i + 0.5) / scale - 0.5).
This script redoes that call on seeded tables, for the grids the DINO
recipes use (14 -> 6: ViT-S/16 at 224 and 96 px; 4 -> 2 and 4 -> 6: the
tiny digits ViT and an upsampling case).
"""

import math
import os

import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "dino", "positions.npz")


def dino_interpolate(grid, new):
    """grid (old*old, D) -> (new*new, D), as interpolate_pos_encoding for a
    new x new patch grid (class token left out: it is copied unchanged)."""
    n, dim = grid.shape
    old = int(math.sqrt(n))
    w0 = h0 = new + 0.1
    x = torch.from_numpy(grid).reshape(1, old, old, dim).permute(0, 3, 1, 2)
    x = F.interpolate(x, scale_factor=(w0 / math.sqrt(n), h0 / math.sqrt(n)), mode="bicubic")
    assert int(w0) == x.shape[-2] and int(h0) == x.shape[-1]
    return x.permute(0, 2, 3, 1).reshape(-1, dim).numpy()


def main():
    rng = np.random.default_rng(0)
    arrays = {f"grid_{old}": rng.normal(size=(old * old, 5)).astype("float32")
              for old in (14, 4)}
    for old, new in ((14, 6), (4, 2), (4, 6)):
        arrays[f"out_{old}_{new}"] = dino_interpolate(arrays[f"grid_{old}"], new)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    np.savez(OUT, **arrays)
    print("wrote", OUT, {k: v.shape for k, v in arrays.items()})


if __name__ == "__main__":
    main()
