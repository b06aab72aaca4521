"""The outer loop: one jitted meta-training step over a (sharded) task population.

    trainer = MetaTrainer(unroller, get_estimator("pes"), num_tasks=8,
                          outer_tx=default_outer_tx(1e-3))
    state = trainer.init(jax.random.key(0), lopt.init(jax.random.key(1)))
    for _ in range(100):
        state, metrics = trainer.step(state)        # metrics stay on device until you fetch them

Several static shape groups (e.g. MLPs of different widths, or several task families) train
one theta together when `unroller` is a sequence of unrollers, one per group: each group gets
its own sub-population of `num_tasks` tasks (vmapped, and sharded over the devices on its own),
`state.population` / `state.est_state` become tuples with one entry per group, and the
meta-gradient is the average over all tasks of all groups (so over groups, with equal weights):

    unrollers = [TruncatedUnroller(family, g, lopt, unroll_length=20, schedule=schedule)
                 for g in family.groups("meta_train")[:3]]
    trainer = MetaTrainer(unrollers, get_estimator("pes"), num_tasks=8)   # 3 x 8 tasks

A non-finite meta-gradient never reaches theta: the step is skipped (theta and the outer
optimizer state are kept) and counted in `state.num_skipped`. Inner divergences are counted
in `state.num_nonfinite_inner` (their tasks are reset at the next step).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from learned_opt.meta import sharding as sharding_lib
from learned_opt.meta.aggregation import Mixture, as_mixture
from learned_opt.meta.population import TaskState, TruncatedUnroller
from parallel import mesh as mesh_lib

PyTree = Any


class MetaTrainState(NamedTuple):
    """Everything a meta-training run needs to continue exactly (see checkpoint.py)."""

    theta: PyTree
    outer_opt_state: PyTree
    est_state: PyTree            # per-task estimator state (PES accumulators), task axis first
    population: TaskState        # task axis first (a tuple of them for a mixture of groups)
    step: jax.Array              # int32 outer steps taken
    num_skipped: jax.Array       # int32 outer steps skipped for a non-finite meta-gradient
    num_nonfinite_inner: jax.Array  # int32 inner trajectories that diverged
    num_resets: jax.Array        # int32 trajectories finished and replaced


# XLA options of the outer step on a CPU when the estimator backpropagates through the unroll
# (TBPTT): YNNPACK fuses dots only, and the reductions of the backward pass (transposes of
# broadcasts, e.g. a gradient's cotangent summed over a stack of momenta) run as XLA's own loops,
# which YNNPACK ran several times slower. Measured on the 2-core dev box (in one process,
# interleaved, 20 rounds; the regression-MLP setup of experiments/bench_meta.py): TBPTT outer step
# MLPLOpt 75.9 -> 57.5 ms, AdafacMLPLOpt 88.8 -> 64.8 ms, NormMLPLOpt 151.5 -> 149.3 ms. Not used
# for ES / PES: there NormMLPLOpt ran 28.5 -> 30.9 ms (MLPLOpt 13.4 -> 12.6 ms).
CPU_BACKPROP_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}


def default_compiler_options(estimator, mesh: Mesh) -> dict | None:
    """The XLA options `MetaTrainer` compiles its step with by default (None: XLA's own)."""
    on_cpu = mesh.devices.flat[0].platform == "cpu"
    return (dict(CPU_BACKPROP_COMPILER_OPTIONS)
            if on_cpu and getattr(estimator, "backpropagates", False) else None)


def default_outer_tx(learning_rate: float, grad_clip: float = 1.0) -> optax.GradientTransformation:
    """Adam on theta after clipping the meta-gradient's global norm (the default outer tx)."""
    return optax.chain(optax.clip_by_global_norm(grad_clip), optax.adam(learning_rate))


def _all_finite(tree: PyTree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


class MetaTrainer:
    """Builds the jitted init and step functions for one unroller + estimator + mesh."""

    def __init__(self, unroller: TruncatedUnroller | Mixture | Sequence[TruncatedUnroller],
                 estimator, *, num_tasks: int,
                 outer_tx: optax.GradientTransformation | None = None, mesh: Mesh | None = None,
                 compiler_options: dict | None = None):
        """`unroller`: one unroller, or a `Mixture` / sequence of them (one per shape group);
        `num_tasks`: population size, per group for a mixture; `compiler_options`: XLA options
        of the jitted step (default: `default_compiler_options`; `{}` for XLA's defaults)."""
        self.unroller = as_mixture(unroller)
        if not isinstance(self.unroller, (TruncatedUnroller, Mixture)):
            raise TypeError(f"unroller must be a TruncatedUnroller, a Mixture or a sequence of "
                            f"TruncatedUnrollers, got {type(unroller).__name__}")
        self.estimator = estimator
        self.num_tasks = int(num_tasks)
        self.outer_tx = outer_tx if outer_tx is not None else default_outer_tx(1e-3)
        self.mesh = mesh if mesh is not None else sharding_lib.population_mesh()
        sharding_lib.check_divisible(self.num_tasks, self.mesh)
        self._meta_grad = sharding_lib.sharded_meta_grad(estimator, self.unroller, self.mesh,
                                                         self.total_tasks)
        self.compiler_options = (default_compiler_options(estimator, self.mesh)
                                 if compiler_options is None else dict(compiler_options) or None)
        self._jit_step = None

    @property
    def unrollers(self) -> tuple[TruncatedUnroller, ...]:
        """The unroller of every group (one for a single-group population)."""
        if isinstance(self.unroller, Mixture):
            return self.unroller.unrollers
        return (self.unroller,)

    @property
    def total_tasks(self) -> int:
        """Tasks over all groups: what one outer step unrolls."""
        return self.num_tasks * len(self.unrollers)

    # ---- shardings ----------------------------------------------------------------------

    def sharding_prefix(self) -> MetaTrainState:
        """One sharding per state field (a pytree prefix of the state, what `jax.jit`'s
        `out_shardings` accepts): population and estimator state split over tasks, the rest
        replicated. Needs no trace of the state, so `init` traces `_init` only once."""
        rep = mesh_lib.replicated(self.mesh)
        split = sharding_lib.population_sharding(self.mesh)
        return MetaTrainState(*[split if name in ("est_state", "population") else rep
                                for name in MetaTrainState._fields])

    def state_shardings(self, theta: PyTree) -> MetaTrainState:
        """Sharding of every state leaf (`sharding_prefix` broadcast over the state's tree)."""
        return self._leaf_shardings(self._abstract(theta))

    def _abstract(self, theta: PyTree) -> MetaTrainState:
        return jax.eval_shape(functools.partial(self._init, theta=theta), jax.random.key(0))

    def _leaf_shardings(self, abstract: MetaTrainState) -> MetaTrainState:
        return MetaTrainState(*[jax.tree.map(lambda _, s=s: s, getattr(abstract, name))
                                for name, s in zip(MetaTrainState._fields,
                                                   self.sharding_prefix(), strict=True)])

    def abstract_state(self, theta: PyTree) -> MetaTrainState:
        """Shapes, dtypes and shardings of the state (what a checkpoint restores into)."""
        abstract = self._abstract(theta)
        return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            abstract, self._leaf_shardings(abstract))

    # ---- init / step --------------------------------------------------------------------

    def _init_population(self, key: jax.Array, theta: PyTree, unroller: TruncatedUnroller):
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(self.num_tasks))
        return jax.vmap(lambda k: unroller.init_task(k, theta, self.estimator.num_particles))(
            keys)

    def _init(self, key: jax.Array, theta: PyTree) -> MetaTrainState:
        if isinstance(self.unroller, Mixture):
            population = tuple(self._init_population(jax.random.fold_in(key, g), theta, u)
                               for g, u in enumerate(self.unroller))
            est_state = tuple(self.estimator.init(theta, self.num_tasks) for _ in population)
        else:
            population = self._init_population(key, theta, self.unroller)
            est_state = self.estimator.init(theta, self.num_tasks)
        zero = jnp.zeros((), jnp.int32)
        return MetaTrainState(theta, self.outer_tx.init(theta), est_state, population,
                              zero, zero, zero, zero)

    def init(self, key: jax.Array, theta: PyTree) -> MetaTrainState:
        """The initial state; task `i` of the population is drawn from `fold_in(key, i)`
        (of group `g` of a mixture: from `fold_in(fold_in(key, g), i)`)."""
        shardings = self.sharding_prefix()
        theta = jax.device_put(theta, shardings.theta)
        return jax.jit(self._init, out_shardings=shardings)(key, theta)

    def _step(self, state: MetaTrainState) -> tuple[MetaTrainState, dict]:
        grad, est_state, population, metrics = self._meta_grad(
            state.theta, state.est_state, state.population)
        finite = _all_finite(grad)
        safe_grad = jax.tree.map(lambda g: jnp.where(finite, g, 0.0), grad)
        updates, opt_state = self.outer_tx.update(safe_grad, state.outer_opt_state, state.theta)
        theta = optax.apply_updates(state.theta, updates)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
        skipped = (~finite).astype(jnp.int32)
        new_state = MetaTrainState(
            keep(theta, state.theta), keep(opt_state, state.outer_opt_state), est_state,
            population, state.step + 1, state.num_skipped + skipped,
            state.num_nonfinite_inner + metrics["num_nonfinite"],
            state.num_resets + metrics["num_resets"])
        metrics = dict(metrics, grad_norm=optax.tree.norm(safe_grad), skipped=skipped)
        return new_state, metrics

    def step(self, state: MetaTrainState) -> tuple[MetaTrainState, dict]:
        """One outer step (jitted on first call; the input state's buffers are donated)."""
        if self._jit_step is None:
            self._jit_step = jax.jit(self._step, out_shardings=(self.sharding_prefix(), None),
                                     donate_argnums=0, compiler_options=self.compiler_options)
        return self._jit_step(state)
