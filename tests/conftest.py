"""Shared test helpers, and the one tolerance policy of the suite.

Tolerances, by what a result is compared with (relative, and absolute as a fraction of the
expected array's largest magnitude, so that near-zero entries of a map do not decide):

* ``"oracle"`` — exbp against an independent computation of the same float32 quantities (the dense
  oracle, another exbp call that must agree): 1e-5 relative, 1e-6 of the peak;
* ``"device"`` — the same computation on another device (GPU against CPU), where reductions run in
  another order: 1e-4 and 1e-5;
* ``"reference"`` — another implementation (TorchRay, Zennit, in PyTorch): 1e-4 and 1e-6.
"""

from __future__ import annotations

import numpy as np

TOLERANCES = {"oracle": (1e-5, 1e-6), "device": (1e-4, 1e-5), "reference": (1e-4, 1e-6)}


def assert_close(got, want, against: str = "oracle") -> None:
    rtol, peak_fraction = TOLERANCES[against]
    want = np.asarray(want)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=peak_fraction * np.abs(want).max())
