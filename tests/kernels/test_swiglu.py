"""swiglu.wgsl vs lm_reference.swiglu (float64).

Tolerance: relative 64 u. silu(g) = g * sigmoid(g) costs one exp (WGSL allows 3 + 2|g| ULP: < 30 ULP for |g| <= 12
here), an add, a division (2.5 ULP) and two multiplies: < 40 u. The far negative tail underflows (exp(-100) is
subnormal, maybe flushed to zero), hence the 1e-30 absolute floor.
"""

import numpy as np
import pytest

from kernel_helpers import U32, assert_within, poisoned
from kyutai_stt import gpu
from kyutai_stt import lm_reference as ref


def run_swiglu(x, width, **constants):
    streams = x.shape[0]
    workgroup_size = constants.get("WORKGROUP_SIZE", 256)
    return gpu.run_kernel("swiglu", {0: x, 1: poisoned((streams, width))},
                          (-(-width // workgroup_size), streams, 1), {"WIDTH": width, **constants})[1]


@pytest.mark.parametrize("streams, width, workgroup_size", [(1, 1, 256), (2, 37, 16), (1, 5632, 256)])
def test_swiglu_matches_numpy(rng, streams, width, workgroup_size):
    x = (3 * rng.standard_normal((streams, 2 * width))).astype(np.float32)
    x[0, :min(width, 4)] = [12.0, -12.0, 100.0, -100.0][:min(width, 4)]  # both tails: no overflow, no NaN
    got = run_swiglu(x, width, WORKGROUP_SIZE=workgroup_size)
    expected = ref.swiglu(x)
    assert_within(got, expected, 64 * U32 * np.abs(expected) + 1e-30, "swiglu")
