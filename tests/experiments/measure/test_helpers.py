"""The shared measurement helpers: one timer, one table writer, one outputs ending."""

import json

import pytest

from experiments.measure import outputs, tables, timing


class _Recorder:
    def __init__(self):
        self.artifacts, self.finished = [], False

    def log_artifact(self, path):
        self.artifacts.append(path.name)

    def finish(self):
        self.finished = True


def test_time_calls_skips_warmup_and_counts_repeats():
    calls = []
    times = timing.time_calls(lambda x: calls.append(x) or x, 3, repeats=4, warmup=2)
    assert len(calls) == 6 and len(times) == 4 and all(t >= 0 for t in times)
    assert timing.median_seconds(lambda: 0, repeats=3) >= 0


@pytest.mark.parametrize("kwargs", [{"repeats": 0}, {"repeats": 2, "warmup": -1}])
def test_time_calls_rejects_bad_counts(kwargs):
    with pytest.raises(ValueError, match="repeats|warmup"):
        timing.time_calls(lambda: 0, **kwargs)


def test_markdown_table_formats_and_escapes():
    text = tables.markdown_table(["a", "b|c"], [[1.234567, None], ["x|y", 2]])
    assert text == "| a | b\\|c |\n|---|---|\n| 1.235 | - |\n| x\\|y | 2 |\n"
    with pytest.raises(ValueError, match="cells"):
        tables.markdown_table(["a"], [[1, 2]])


def test_records_table_orders_columns_and_fills_missing():
    rows = [{"b": 1, "a": 2.0}, {"a": 3}]
    assert tables.records_table(rows, ["a", "b"], fmt=str, missing="?") == (
        "| a | b |\n|---|---|\n| 2.0 | 1 |\n| 3 | ? |\n")
    assert tables.records_table([]) == ""


def test_write_outputs_strict_json_artifacts_and_finish(tmp_path):
    import numpy as np

    tracker = _Recorder()
    figure = tmp_path / "plot.png"
    figure.write_bytes(b"png")
    paths = outputs.write_outputs(tmp_path / "run", {"x": float("nan"), "y": np.float32(2),
                                                     "z": np.arange(2)}, "# report\n",
                                  tracker=tracker, figures=[figure])
    assert [p.name for p in paths] == ["results.json", "report.md", "plot.png"]
    assert json.loads(paths[0].read_text()) == {"x": None, "y": 2.0, "z": [0, 1]}
    assert paths[1].read_text() == "# report\n"
    assert tracker.artifacts == ["results.json", "report.md", "plot.png"] and tracker.finished
    kept_open = _Recorder()
    outputs.write_outputs(tmp_path / "run2", {}, tracker=kept_open, finish=False)
    assert kept_open.artifacts == ["results.json"] and not kept_open.finished
