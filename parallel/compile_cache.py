"""JAX's persistent compilation cache, switched on for a run, with hit / miss counters.

Compiling a large jitted step (e.g. a meta-training step over a mixture of 24 shape groups:
minutes on a 2-core CPU) is paid again by every process that runs it. With the persistent
cache on, a compiled executable is written to a directory, and a later process that traces
and lowers the same program (same HLO, same jax / jaxlib, same devices and flags) loads it
instead of compiling. Tracing and lowering still run: they produce the cache key.

    from parallel import compile_cache
    compile_cache.enable("workdir/compile_cache")          # before the first compilation
    ...                                                    # jit, run as usual
    compile_cache.counts()   # {"hits": 3, "misses": 1, "saved_s": 41.2}

The cache directory is trusted input (a loaded executable runs as code): keep it private.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache as _jax_cache

_HIT = "/jax/compilation_cache/cache_hits"
_REQUEST = "/jax/compilation_cache/compile_requests_use_cache"
_SAVED = "/jax/compilation_cache/compile_time_saved_sec"

_lock = threading.Lock()
_counts = {"hits": 0, "misses": 0, "saved_s": 0.0}
_listening = False


def _on_event(event: str, **kwargs) -> None:
    with _lock:
        if event == _HIT:
            _counts["hits"] += 1
            _counts["misses"] -= 1
        elif event == _REQUEST and jax.config.jax_compilation_cache_dir:
            _counts["misses"] += 1  # a lookup, uncounted again if it hits (JAX records
            # this event for every compilation, with or without a cache directory)


def _on_duration(event: str, duration: float, **kwargs) -> None:
    if event == _SAVED:
        with _lock:
            _counts["saved_s"] += float(duration)


def _listen() -> None:
    global _listening
    if not _listening:
        jax.monitoring.register_event_listener(_on_event)
        jax.monitoring.register_event_duration_secs_listener(_on_duration)
        _listening = True


def enable(path: str | Path, *, min_compile_time_s: float = 1.0) -> Path:
    """Use `path` (created if missing) as this process's persistent compilation cache.

    Programs whose compilation took at least `min_compile_time_s` seconds are written; every
    compilation first looks the program up. Call it before the computations you want cached
    (a later call switches directories: JAX's cache is reset and re-opened at `path`).

    Returns the absolute cache directory. Raises ValueError for a negative
    `min_compile_time_s` or a `path` that exists and is not a directory.
    """
    if min_compile_time_s < 0:
        raise ValueError(f"min_compile_time_s must be >= 0, got {min_compile_time_s}")
    path = Path(path).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ValueError(f"compilation cache path {path} exists and is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    _listen()
    if jax.config.jax_compilation_cache_dir != str(path):
        _jax_cache.reset_cache()  # JAX opens its cache once; re-open it at the new path
        _jax_cache.set_cache_dir(str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
    return path


def disable() -> None:
    """Stop reading and writing a persistent cache in this process (what `enable` turned on)."""
    _jax_cache.reset_cache()
    jax.config.update("jax_compilation_cache_dir", None)


@contextlib.contextmanager
def enabled(path: str | Path | None, *, min_compile_time_s: float = 1.0) -> Iterator[dict]:
    """`enable(path)` for the body of a `with`, then back to the cache setting before it;
    `path` None or "": no cache (the body runs as it would without). Yields a dict that,
    after the body, holds the body's own `counts()` (hits, misses, saved_s).

        with compile_cache.enabled(workdir / "compile_cache") as stats:
            run(...)
        print(stats)   # {"hits": ..., "misses": ..., "saved_s": ...}
    """
    previous_dir = jax.config.jax_compilation_cache_dir
    previous_min = jax.config.jax_persistent_cache_min_compile_time_secs
    before = counts()
    stats: dict = {}
    try:
        if path:
            enable(path, min_compile_time_s=min_compile_time_s)
        yield stats
    finally:
        after = counts()
        stats.update({k: after[k] - before[k] for k in after})
        if path and jax.config.jax_compilation_cache_dir != previous_dir:
            _jax_cache.reset_cache()
            jax.config.update("jax_compilation_cache_dir", previous_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", previous_min)


def counts() -> dict:
    """Cache lookups since `enable` was first called: hits, misses and the compile seconds the
    hits saved (compile time recorded with the entry minus the time to load it: negative for
    programs that compile faster than they load)."""
    with _lock:
        return dict(_counts)
