"""One process of the 2-process meta-gradient test (run by test_multiprocess.py).

argv: coordinator_address process_id output.npz
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", ".."))

from parallel import distributed  # noqa: E402

distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]),
                       local_device_count=2)

import jax  # noqa: E402
import numpy as np  # noqa: E402
from common import run_toy_meta_steps  # noqa: E402

assert jax.device_count() == 4 and jax.local_device_count() == 2
theta, grad_norms = run_toy_meta_steps(devices=jax.devices())
if jax.process_index() == 0:
    np.savez(sys.argv[3], grad_norms=np.asarray(grad_norms),
             **{k: v for k, v in distributed.fetch_replicated(theta).items()})
print("worker", jax.process_index(), "done", flush=True)
