"""What a run ran on: code version, command line, Python, packages, devices, JAX/XLA settings.

Collected once at the start of a run (a few `git` subprocesses, no per-step cost) and written
to `env.json` by the local tracker:

    from experiments.tracking import envinfo
    env = envinfo.collect()          # JSON-able dict
    env["git"]["commit"], env["git"]["dirty"], env["packages"]["jax"], env["jax"]["devices"]

Secrets are never recorded: environment variables are kept only from an allow-list of JAX/XLA
prefixes, and any user:password in a tracking URI is redacted.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# Packages whose versions change numerical results or run behaviour.
PACKAGES: tuple[str, ...] = (
    "learned-opt", "jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "libtpu",
    "flax", "optax", "orbax-checkpoint", "chex", "numpy", "scipy", "ml_collections", "absl-py",
    "scikit-learn", "mnist1d", "mlflow", "tensorboardX", "tensorboard", "optuna", "matplotlib",
)

# Environment variables that steer JAX / XLA / accelerators; others are not recorded.
ENV_PREFIXES: tuple[str, ...] = (
    "JAX_", "XLA_", "TPU_", "LIBTPU_", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
    "TF_CPP_", "NCCL_", "OMP_NUM_THREADS", "MLFLOW_TRACKING_URI",
)
_SECRET_WORDS = ("TOKEN", "PASSWORD", "SECRET", "CREDENTIAL", "AUTH")

# Cap on the diff saved next to a dirty run, so a huge working tree cannot flood a workdir.
MAX_DIFF_BYTES = 5 * 1024 * 1024

_REPO_ROOT = Path(__file__).resolve().parents[2]


def _git(args: list[str], cwd: Path) -> bytes | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def git_diff(repo: Path = _REPO_ROOT) -> bytes | None:
    """`git diff HEAD` of the code's repository (tracked files), or None outside git."""
    return _git(["diff", "HEAD", "--binary"], repo)


def git_info(repo: Path = _REPO_ROOT) -> dict[str, Any]:
    """Commit, branch, dirty flag and sha256 of `git diff HEAD` for the repository of the code.

    `dirty` counts untracked files too (they can change what runs); `diff_sha256` hashes the
    tracked changes only, so two runs with the same commit and hash ran the same tracked code.
    """
    commit = _git(["rev-parse", "HEAD"], repo)
    if commit is None:
        return {"commit": None, "error": f"{repo} is not a git checkout (or git is missing)"}
    branch = _git(["rev-parse", "--abbrev-ref", "HEAD"], repo) or b""
    status = _git(["status", "--porcelain"], repo) or b""
    diff = git_diff(repo) or b""
    untracked = [line[3:] for line in status.decode(errors="replace").splitlines()
                 if line.startswith("??")]
    return {
        "commit": commit.decode().strip(),
        "branch": branch.decode().strip(),
        "dirty": bool(status.strip()),
        "diff_sha256": hashlib.sha256(diff).hexdigest(),
        "diff_bytes": len(diff),
        "num_untracked": len(untracked),
        "repo": str(repo),
    }


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None when not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def redact_uri(uri: str) -> str:
    """`uri` with any user:password removed (scheme://user:pw@host -> scheme://***@host)."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def jax_env_vars(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The JAX/XLA/accelerator environment variables, secrets excluded, URIs redacted."""
    environ = dict(os.environ if environ is None else environ)
    kept = {}
    for key, value in sorted(environ.items()):
        if not key.startswith(ENV_PREFIXES) or any(word in key for word in _SECRET_WORDS):
            continue
        kept[key] = redact_uri(value) if key.endswith("_URI") else value
    return kept


def jax_info() -> dict[str, Any]:
    """Backend, devices and numerics-relevant config of the running JAX (starts the backend)."""
    import jax

    devices = jax.devices()
    config_names = (
        "jax_enable_x64", "jax_default_matmul_precision", "jax_threefry_partitionable",
        "jax_num_cpu_devices", "jax_platforms", "jax_default_prng_impl",
    )
    config = {}
    for name in config_names:
        try:
            value = getattr(jax.config, name)
        except AttributeError:
            continue
        plain = isinstance(value, (bool, int, float, str, type(None)))
        config[name] = value if plain else str(value)
    return {
        "backend": jax.default_backend(),
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "device_kinds": sorted({d.device_kind for d in devices}),
        "devices": [str(d) for d in devices[:64]],
        "config": config,
    }


def host_info() -> dict[str, Any]:
    """Host name, OS, CPU count and total memory."""
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import psutil

        info["memory_total_gb"] = round(psutil.virtual_memory().total / 2**30, 2)
    except ImportError:
        pass
    return info


def collect(*, with_jax: bool = True, repo: Path = _REPO_ROOT) -> dict[str, Any]:
    """Everything above in one JSON-able dict (the content of `env.json`).

    Args:
      with_jax: include backend and devices (this initializes the JAX backend).
      repo: repository whose git state is recorded (default: the one holding this code).
    """
    env: dict[str, Any] = {
        "time_unix": time.time(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": [sys.executable, *sys.argv],
        "cwd": os.getcwd(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "git": git_info(repo),
        "packages": package_versions(),
        "env_vars": jax_env_vars(),
        "host": host_info(),
    }
    if with_jax:
        env["jax"] = jax_info()
    return env
