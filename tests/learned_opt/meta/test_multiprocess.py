"""2 local processes (jax.distributed on a localhost coordinator, gloo collectives, 2 CPU
devices each) compute the same meta-gradients and theta as 1 process holding all tasks."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from common import run_toy_meta_steps  # noqa: E402

WORKER = os.path.join(os.path.dirname(__file__), "multiprocess_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    address = f"localhost:{_free_port()}"
    out = tmp_path / "theta.npz"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    procs = [subprocess.Popen([sys.executable, WORKER, address, str(i), str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    try:
        logs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)

    theta, grad_norms = run_toy_meta_steps(devices=jax.devices()[:1])
    got = np.load(out)
    np.testing.assert_allclose(got["grad_norms"], grad_norms, rtol=1e-5)
    for key, value in theta.items():
        np.testing.assert_allclose(got[key], np.asarray(value), rtol=1e-5, atol=1e-7)
