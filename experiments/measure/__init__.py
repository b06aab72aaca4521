"""Measurement helpers shared by the `bench_*`, `parallelism`, `pipeline_bench` and `remat_memory`
commands, and the measurement code those commands run.

Shared helpers (leaf modules, importable from any library):
- `timing`: the one median-of-repeats timer (`median_seconds`, `time_calls`);
- `tables`: the one markdown-table writer (`markdown_table`, `records_table`);
- `outputs`: the one "write results.json + report.md, log them, finish the run" ending.

Measurement code: `update` (optimizer update cost), `train_step` (whole train steps),
`meta` (meta-training throughput), `tracking_overhead`, `parallelism` (DP / TP rows),
`async_sgd`, `pipeline`, `remat`.
"""
