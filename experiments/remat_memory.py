"""Gradient checkpointing benchmark: memory and step time of each remat policy, in one run.

    python -m experiments.remat_memory --config experiments/configs/remat_memory.py \
        --workdir workdirs/remat_memory

Writes results.json, report.md and memory_vs_depth.png into the workdir (via the tracker);
the measurements are `experiments.measure.remat`.
"""

from __future__ import annotations

from experiments import cli, tracking
from experiments.measure import remat


def main(config, workdir):
    tracker = tracking.start_run(workdir, config=config, backends=tuple(config.backends))
    results = remat.run(config, workdir, tracker)
    paths = remat.write_run_outputs(results, workdir, tracker)
    tracker.finish()
    print(remat.target_check(results["rows"]))
    print(f"report: {paths[1].resolve()}")


if __name__ == "__main__":
    cli.run(main, config_help="remat benchmark config file",
            default_config_file="remat_memory.py")
