"""Two local processes on one journal-file study run disjoint trials and share one budget."""

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna

from experiments.automl import study as st

REPO = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("journal_worker.py")


def test_two_processes_share_a_journal_study(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    outs = [tmp_path / f"worker{i}.json" for i in (1, 2)]
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(tmp_path), str(out)], env=env,
                              cwd=REPO) for out in outs]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    mine = [set(json.loads(out.read_text())["mine"]) for out in outs]
    study = optuna.load_study(study_name="shared", storage=st.storage_for(tmp_path, "journal"))
    numbers = {t.number for t in study.trials if t.state.is_finished()}
    assert mine[0] and mine[1], "both workers ran trials"
    assert not mine[0] & mine[1], "a trial ran in both workers"
    assert mine[0] | mine[1] == numbers
    assert 12 <= len(numbers) <= 13  # one budget for the study (a worker may start one late)
