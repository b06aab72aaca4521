"""parallel.compile_cache: a program compiled once is loaded (same results) by a new jit of
the same program, the counters say so, and the previous setting comes back."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from parallel import compile_cache


def _new_program():
    """A new function object each call (so JAX's in-memory caches miss, as in a new
    process), always the same program."""
    def program(x):
        for _ in range(3):
            x = jnp.sin(x) @ x.T + jnp.cos(x)
        return x
    return program


def test_a_cleared_process_loads_the_program_it_compiled(tmp_path):
    x = jnp.arange(16.0).reshape(4, 4) / 16
    before_dir = jax.config.jax_compilation_cache_dir
    with compile_cache.enabled(tmp_path / "cache", min_compile_time_s=0.0) as stats:
        first = jax.jit(_new_program())(x)
        assert any((tmp_path / "cache").iterdir()), "nothing was written to the cache"
        misses_after_compile = compile_cache.counts()["misses"]
        second = jax.jit(_new_program())(x)
        assert compile_cache.counts()["misses"] == misses_after_compile
    np.testing.assert_array_equal(np.asarray(second), np.asarray(first))
    assert stats["hits"] == 1 and stats["misses"] >= 1
    assert jax.config.jax_compilation_cache_dir == before_dir


def test_without_a_path_nothing_is_cached(tmp_path):
    with compile_cache.enabled(None) as stats:
        jax.jit(lambda x: x * 3.0 + 1.0)(jnp.ones(3))
    assert stats == {"hits": 0, "misses": 0, "saved_s": 0.0}
    assert not any(tmp_path.iterdir())


def test_bad_arguments_fail_clearly(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        compile_cache.enable(not_a_dir)
    with pytest.raises(ValueError, match="min_compile_time_s"):
        compile_cache.enable(tmp_path / "c", min_compile_time_s=-1.0)
