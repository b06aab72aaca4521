"""Reports: runs written through the tracker come back as correct tables and readable plots."""

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from experiments import tracking
from experiments.tracking import compare as report

REPO_ROOT = Path(__file__).resolve().parents[3]

# (folder, optimizer, seed, final train loss); adam has two seeds, sgd one, and sgd diverges.
RUNS = [("adam_seed0", "adam", 0, 0.2), ("adam_seed1", "adam", 1, 0.4),
        ("sgd_seed0", "sgd", 0, None)]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    for folder, optimizer, seed, final in RUNS:
        tracker = tracking.start_run(root / folder, config={"seed": seed, "optimizer": {
            "name": optimizer, "learning_rate": 0.1 if optimizer == "sgd" else 1e-3}},
            collect_env=False)
        for step in range(0, 101, 10):
            loss = 2.0 - (2.0 - final) * step / 100 if final is not None else (
                float("nan") if step == 100 else 2.0 + step)
            tracker.log_metrics(step, {"train/loss": loss, "valid/accuracy": step / 200,
                                       "grad_norm/layer0/w": 1.0})
        tracker.log_metrics(100, {"speed/steps_per_s": 50.0 + seed})
        tracker.finish()
    return root


def test_groups_seeds_and_finals(sweep, tmp_path):
    path = report.build_report([sweep], tmp_path)
    summary = json.loads((tmp_path / "report_summary.json").read_text())
    assert set(summary) == {"adam", "sgd"}
    assert sorted(summary["adam"]["seeds"]) == [0, 1]
    adam = summary["adam"]["metrics"]["train/loss"]
    assert adam["final_mean"] == pytest.approx(0.3) and adam["final_std"] == pytest.approx(0.1)
    assert adam["best_mean"] == pytest.approx(0.3) and adam["num_diverged"] == 0
    sgd = summary["sgd"]["metrics"]["train/loss"]
    assert sgd["num_diverged"] == 1 and sgd["best_mean"] == pytest.approx(2.0)
    assert summary["adam"]["metrics"]["valid/accuracy"]["best_mean"] == pytest.approx(0.5)
    text = path.read_text()
    assert "| adam | 0, 1 | 0.3 +- 0.1 |" in text
    assert "1/1" in text  # the sgd run's divergence is reported, not hidden
    assert '"optimizer.learning_rate"' not in text and "optimizer.learning_rate" in text
    assert "grad_norm/layer0/w" not in text  # per-tensor breakdowns are not plotted by default


def test_plots_are_readable_pngs(sweep, tmp_path):
    report.build_report([sweep / folder for folder, *_ in RUNS], tmp_path)
    image = matplotlib.image.imread(tmp_path / "train_loss.png")
    assert image.shape[0] > 300 and image.shape[1] > 500
    assert np.std(image[..., :3]) > 0.05  # not a blank canvas
    assert "![train_loss.png](train_loss.png)" in (tmp_path / "report.md").read_text()


def test_group_by_and_bad_input(sweep, tmp_path):
    report.build_report([sweep], tmp_path, group_by="optimizer.learning_rate")
    assert set(json.loads((tmp_path / "report_summary.json").read_text())) == {"0.001", "0.1"}
    with pytest.raises(ValueError, match="never logged"):
        report.build_report([sweep], tmp_path, metrics=["test/loss"])
    with pytest.raises(KeyError, match="no setting 'batch_size'"):
        report.build_report([sweep], tmp_path, group_by="batch_size")
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
        report.build_report([tmp_path], tmp_path)


def test_command_line(sweep, tmp_path):
    out = tmp_path / "cli"
    subprocess.run([sys.executable, "-m", "experiments.report", "--workdir",
                    str(sweep / "adam_seed0"), f"--config.out={out}", "--workdir",
                    str(sweep / "adam_seed1")],
                   cwd=REPO_ROOT, check=True, capture_output=True)
    summary = json.loads((out / "report_summary.json").read_text())
    assert list(summary) == ["adam"] and len(summary["adam"]["runs"]) == 2
