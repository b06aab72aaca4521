"""The benchmark's offline evaluation: save the final models' predictions, evaluate them with
`experiments.evaluation`, and fold the figures back into results.json.

For every classification task (softmax or sigmoid `SupervisedTask`) and every final run, the
model at the end of training on the first final seed predicts the full valid and test splits;
the file goes to `<workdir>/evaluation/predictions/<name>.npz` (format:
`experiments.evaluation.predictions`), with `<name>` = `<task>__<optimizer>__<protocol>`. After
the last task, `experiments.evaluation.evaluate_run` evaluates that folder (evaluation.json,
evaluation.md, reliability diagrams), and each run of results.json gains an `evaluation` entry:

    {"model": name, "seed": first final seed, "test_accuracy", "test_f1_macro",
     "test_f1_per_class", "test_log_loss", "ece_before", "ece_after", "temperature",
     "per_class_accuracy": {"class=c": accuracy}, "reliability_diagram": PNG path}

ECE is of the top label with 15 equal-width bins; the temperature is fitted on valid only and
applied to test (`evaluation.calibration.temperature_scaling`). A bounded sample of each
model's test predictions (input id, prediction, probability, label) is logged to the trackers
as a CSV artifact.

    saver = PredictionSaver(workdir, tracker, sample_rows=64)
    name = saver.save(task, task_label, entry_label, protocol, params)   # None: not classified
    evaluation = evaluate_saved(workdir, settings)                       # {name: summary}
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from experiments.evaluation import predictions as predictions_lib
from experiments.evaluation import report as evaluation_report

EVALUATION_DIR = "evaluation"
CLASSIFICATION_LOSSES = ("softmax", "sigmoid")


def run_dir(workdir) -> Path:
    """Where the benchmark's predictions and evaluation files go."""
    return Path(workdir) / EVALUATION_DIR


def base_task(task):
    """The task under benchmark wrappers (`eval_params.EvalParamsTask`)."""
    return getattr(task, "task", task)


def supports_predictions(task) -> bool:
    """A classification task whose full valid and test splits can be predicted."""
    task = base_task(task)
    return (hasattr(task, "full_split") and hasattr(task, "net")
            and getattr(task, "loss_kind", None) in CLASSIFICATION_LOSSES)


def model_params(run_task, params):
    """The parameters a run is evaluated at: schedule-free's `eval` half, else `params`."""
    if run_task is not base_task(run_task):
        return params["eval"]
    return params


def model_name(task_label: str, entry_label: str, protocol: str) -> str:
    """`<task>__<optimizer>__<protocol>` with every character outside [A-Za-z0-9_.+-] -> '-'."""
    raw = f"{task_label}__{entry_label}__{protocol}"
    return "".join(c if c.isalnum() or c in "_.+-" else "-" for c in raw)


class PredictionSaver:
    """Writes the benchmark's final-model predictions and logs a sample of each."""

    def __init__(self, workdir, tracker, *, sample_rows: int = 64):
        if sample_rows < 0:
            raise ValueError(f"sample_rows={sample_rows} must be >= 0")
        self.dir = run_dir(workdir)
        self.tracker = tracker
        self.sample_rows = sample_rows
        self.saved: list[str] = []

    def save(self, run_task, task_label: str, entry_label: str, protocol: str,
             params) -> str | None:
        """Predict valid + test with `params` (one seed's final parameters, as run) and save;
        returns the model name, or None for a task that is not a classification task."""
        if not supports_predictions(run_task):
            return None
        task = base_task(run_task)
        preds = predictions_lib.predict_task(task, model_params(run_task, params))
        name = model_name(task_label, entry_label, protocol)
        predictions_lib.save_predictions(self.dir, name, preds)
        if self.sample_rows:
            self.tracker.log_artifact(self._sample_csv(name, preds))
        self.saved.append(name)
        return name

    def _sample_csv(self, name: str, preds) -> Path:
        test = preds.select("test")
        rows = np.linspace(0, len(test.labels) - 1, min(self.sample_rows, len(test.labels)))
        path = self.dir / "samples" / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["split", "input_id", "prediction", "probability", "label"])
            for row in np.unique(rows.astype(int)):
                predicted = int(test.probs[row].argmax())
                writer.writerow(["test", int(test.ids[row]), predicted,
                                 f"{test.probs[row, predicted]:.6f}", int(test.labels[row])])
        return path


def model_summary(name: str, model: dict, folder: Path) -> dict:
    """The results.json `evaluation` entry of one evaluated model (see the module docstring)."""
    test = model["splits"]["test"]
    scaling = model["temperature_scaling"]
    per_class = model["slices"]["per_slice"]["class"]
    diagram = folder / f"reliability_{name}_test_uniform.png"
    return {
        "model": name, "test_accuracy": test["accuracy"], "test_f1_macro": test["f1_macro"],
        "test_f1_per_class": test["f1_per_class"], "test_log_loss": test["log_loss"],
        "ece_before": scaling["before"]["ece"], "ece_after": scaling["after"]["ece"],
        "temperature": scaling["temperature"],
        "per_class_accuracy": {k: v["accuracy"] for k, v in per_class.items()},
        "reliability_diagram": str(Path(EVALUATION_DIR) / diagram.name)}


def evaluate_saved(workdir, settings: evaluation_report.EvaluationSettings) -> dict[str, dict]:
    """Evaluate `<workdir>/evaluation` (written by a PredictionSaver); {model name: summary}."""
    folder = run_dir(workdir)
    results = evaluation_report.evaluate_run(folder, settings)
    return {name: model_summary(name, model, folder)
            for name, model in results["models"].items()}


def calibration_table(records, protocols) -> dict:
    """Per protocol and optimizer, over the tasks with an evaluated model: the medians of test
    ECE before / after temperature scaling, of the fitted temperature and of the worst class's
    accuracy, and the mean test macro F1 (results.json `summary.calibration`).

        {protocol: {label: {"num_tasks", "ece_before", "ece_after", "temperature",
                            "worst_class_accuracy", "test_f1_macro", "tasks": [labels]}}}
    """
    table = {}
    for protocol in protocols:
        per_label: dict[str, dict[str, list]] = {}
        for record in records:
            for label, entry in record["optimizers"].items():
                evaluation = entry["runs"][protocol].get("evaluation")
                if not evaluation:
                    continue
                rows = per_label.setdefault(label, {k: [] for k in (
                    "tasks", "ece_before", "ece_after", "temperature",
                    "worst_class_accuracy", "test_f1_macro")})
                rows["tasks"].append(record["label"])
                for key in ("ece_before", "ece_after", "temperature", "test_f1_macro"):
                    rows[key].append(evaluation[key])
                rows["worst_class_accuracy"].append(
                    min(evaluation["per_class_accuracy"].values()))
        table[protocol] = {
            label: {"num_tasks": len(rows["tasks"]), "tasks": rows["tasks"],
                    "test_f1_macro": float(np.mean(rows["test_f1_macro"])),
                    **{key: float(np.median(rows[key])) for key in (
                        "ece_before", "ece_after", "temperature", "worst_class_accuracy")}}
            for label, rows in per_label.items()}
    return table
