"""The one ending of every measurement command: write the run's files, log them, finish.

    paths = write_outputs(workdir, results, report_md, tracker=tracker, figures=[plot_path])

writes `results.json` (strict JSON: NaN / Infinity become null) and `report.md` into the
workdir, logs them and any extra files (plots) as artifacts, and finishes the tracker.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _strict(value: Any) -> Any:
    """`value` with non-finite floats as None, NumPy scalars / arrays as builtins."""
    if isinstance(value, dict):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str):
        return _strict(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_outputs(workdir: str | os.PathLike, results: dict, report: str | None = None, *,
                  tracker: Any = None, figures: Sequence[str | os.PathLike] = (),
                  finish: bool = True) -> list[Path]:
    """results.json (+ report.md) into `workdir`; every written file and `figures` logged as
    artifacts of `tracker` (if given), which is then finished unless `finish=False`.

    Returns the paths: results.json, report.md (if any), then `figures`.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    paths = [workdir / "results.json"]
    paths[0].write_text(json.dumps(_strict(results), indent=2, allow_nan=False) + "\n")
    if report is not None:
        paths.append(workdir / "report.md")
        paths[-1].write_text(report)
    paths += [Path(f) for f in figures]
    if tracker is not None:
        for path in paths:
            tracker.log_artifact(path)
        if finish:
            tracker.finish()
    return paths
