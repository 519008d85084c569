"""Float32 tolerances from rounding-error analysis, relative to the values' scale.

Two float32 computations of one value that differ only in the order of their
sums (another CPU's SIMD width or AMX tiles, oneDNN on or off, a padded
prefill against an unpadded forward, a chunked scan against a sequential one)
differ by rounding alone. A sum of n products rounded in float32 has an error
of at most about lambda * sqrt(n) * u times the sum of the terms' magnitudes
(u = 2**-24, the unit roundoff; the probabilistic bound of Higham & Mary,
SIAM J. Sci. Comput. 41(5), 2019, which holds with probability near 1 for
lambda of a few units). Along a network these relative errors add up, one per
reduction on the path from input to output, and the largest output magnitude
stands in for the terms' magnitudes (LayerNorm/RMSNorm keep every layer's
activations at that order). So

    atol = SAFETY * u * max|reference| * sum_i sqrt(n_i)

with n_i the length of each reduction on the path (embedding width, inner
width, state size, sequence length, ...). SAFETY = 8 covers lambda and the
cancellation the magnitude proxy misses, and stays ~1e5 times below any real
bug's error (a wrong cache, a dropped scale), which moves outputs by O(1).
"""

import math

import numpy as np

UNIT_ROUNDOFF = 2.0 ** -24
SAFETY = 8.0


def float32_atol(reference, reductions):
    """The absolute tolerance for comparing recomputations of ``reference``:
    ``reductions`` lists the lengths of the sums on one output's path."""
    scale = float(np.max(np.abs(np.asarray(reference, dtype=np.float64))))
    return SAFETY * UNIT_ROUNDOFF * max(scale, 1.0) * sum(math.sqrt(n) for n in reductions)


def assert_float32_close(actual, reference, reductions, err_msg=""):
    """``np.testing.assert_allclose`` with ``float32_atol`` (and no rtol)."""
    np.testing.assert_allclose(actual, reference, rtol=0,
                               atol=float32_atol(reference, reductions), err_msg=err_msg)
