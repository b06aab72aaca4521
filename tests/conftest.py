"""Test-wide setup: 8 simulated CPU devices, fixed seeds.

The device count must be set before any JAX backend starts, so it happens at import time of this
conftest (pytest imports it before any test module).
"""

import os
import random

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

NUM_CPU_DEVICES = 8
jax.config.update("jax_num_cpu_devices", NUM_CPU_DEVICES)
jax.config.update("jax_threefry_partitionable", True)


@pytest.fixture(autouse=True)
def _fixed_seeds():
    """Python and NumPy global RNGs start from the same state in every test."""
    random.seed(0)
    np.random.seed(0)
    yield


def pytest_configure(config):
    # `slow` marks tests that take more than a few seconds; `make test` still runs them all.
    config.addinivalue_line("markers", "slow: longer test, still run by make test")
