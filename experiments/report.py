"""Turn tracked runs into a markdown report with loss curves, comparing runs side by side.

    python -m experiments.report --workdir workdirs/adam_s0 --workdir workdirs/adam_s1 \
        --workdir workdirs/mlp_lopt_s0 [--config.out=workdirs/report] \
        [--config.group_by=optimizer.name] [--config.metrics=train/loss,valid/loss]
    python -m experiments.report --workdir workdirs/sweep     # every run below this folder

Config: `experiments/configs/report.py` (the default); the report itself:
`experiments.tracking.compare` (grouping by name over seeds, tables, plots).
"""

from __future__ import annotations

from experiments import cli
from experiments.tracking import compare


def main(config, workdirs):
    workdirs = [w for arg in workdirs or () for w in cli.names(arg)]
    if not workdirs:
        raise ValueError("give at least one --workdir (a run folder or a folder of runs)")
    report = compare.build_report(workdirs, config.out or None,
                                  group_by=config.group_by or None,
                                  metrics=list(cli.names(config.metrics)) or None)
    print(f"wrote {report}")


if __name__ == "__main__":
    cli.run(main, config_help="report config", default_config_file="report.py",
            workdir="many", lock_config=True)
