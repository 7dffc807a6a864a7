"""Fixtures of the kernel tests: fresh random inputs every run, reproducible through KERNEL_TEST_SEED."""

import os

import numpy as np
import pytest


@pytest.fixture
def rng():
    # A fresh seed per test (printed, so that a failure's captured output says how to replay it).
    seed = int(os.environ.get("KERNEL_TEST_SEED") or np.random.SeedSequence().entropy % 2**63)
    print(f"replay with KERNEL_TEST_SEED={seed}")
    return np.random.default_rng(seed)
