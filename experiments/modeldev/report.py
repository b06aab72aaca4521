"""Markdown and figures of the ensembles and learning-curves commands; every table and plot
names its protocol, split and seeds."""

from __future__ import annotations

from pathlib import Path

from experiments.measure.tables import markdown_table


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _protocol_line(protocol: str) -> str:
    target = {"generalization": "the validation loss",
              "optimization": "the final training loss"}[protocol]
    return (f"Protocol: **{protocol}** (learning rates tuned on {target}, equal grid budget "
            "per optimizer); scores on the **test** split.")


def ensemble_markdown(results: dict) -> str:
    lines = [f"# Ensembles on {results['task']} {results['task_kwargs']}", "",
             _protocol_line(results["protocol"]),
             f"{results['num_steps']} steps per member; member seeds from "
             f"{results['member_seed']}; wall {results['wall_time_s']:.0f} s.", "",
             "## Tuned learning rates", ""]
    lines.append(markdown_table(
        ["optimizer", "learning rate", "objective", "trials", "at edge"],
        [[n, t["learning_rate"], t["objective"], t["num_trials"], ",".join(t["at_edge"])]
         for n, t in results["tuning"].items()]))
    lines += ["## Seed ensembles, bagging and mixed (averaged probabilities / majority vote)",
              "", "best member = best on valid; gain = ensemble - that member (test accuracy)",
              ""]
    rows = []
    for label, entry in results["ensembles"].items():
        avg, div = entry["average"], entry["diversity"]
        rows.append([label, entry["num_members"], avg["test_accuracy"],
                     entry["vote_test_accuracy"], div["best_member_accuracy"],
                     div["gain_over_best_member"], avg["test_log_loss"], avg["test_ece"],
                     avg["test_ece_temperature_scaled"], div["mean_error_correlation"],
                     div["mean_disagreement"]])
    lines.append(markdown_table(
        ["ensemble", "M", "acc (avg)", "acc (vote)", "best member", "gain", "log loss", "ECE",
         "ECE (T on valid)", "error corr", "disagreement"], rows))
    boost = results["boosting"]
    lines += ["## Boosting", "", f"AdaBoost-SAMME, members: {boost['members']}, "
              f"{boost['num_members']} kept (stopped early: {boost['stopped_early']}); "
              "HistGradientBoosting on the raw inputs.", ""]
    lines.append(markdown_table(
        ["model", "test accuracy", "test log loss", "ECE"],
        [["SAMME (vote)", boost["samme_test_accuracy"], boost["samme"]["test_log_loss"],
          boost["samme"]["test_ece"]],
         ["first SAMME member", boost["first_member_test_accuracy"], None, None],
         ["HistGradientBoosting", boost["hist_gradient_boosting"]["test_accuracy"],
          boost["hist_gradient_boosting"]["test_log_loss"],
          boost["hist_gradient_boosting"]["test_ece"]]]))
    stack = results["stacking"]
    lines += ["## Stacking", "", f"{stack['folds']}-fold out-of-fold predictions of the train "
              f"split; meta-learner: {stack['meta_learner']} (never fitted on valid or test).",
              ""]
    rows = [[n, stack["oof_train_accuracy"][n], b["test_accuracy"], b["test_log_loss"]]
            for n, b in stack["base"].items()]
    rows.append(["**stacked**", None, stack["stacked"]["test_accuracy"],
                 stack["stacked"]["test_log_loss"]])
    lines.append(markdown_table(["learner", "OOF train acc", "test acc", "test log loss"], rows))
    lines.append(f"\nGain over the best base learner on valid ({stack['best_base_on_valid']}): "
                 f"{stack['gain_over_best_base']:+.4f} test accuracy.\n")
    return "\n".join(lines)


def ensemble_figures(results: dict, workdir) -> list[Path]:
    plt = _pyplot()
    labels = list(results["ensembles"])
    entries = [results["ensembles"][k] for k in labels]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    xs = range(len(labels))
    left.bar([x - 0.2 for x in xs], [e["average"]["test_accuracy"] for e in entries], 0.4,
             label="ensemble (avg)")
    left.bar([x + 0.2 for x in xs], [e["diversity"]["best_member_accuracy"] for e in entries],
             0.4, label="best member (valid)")
    left.set_xticks(list(xs), labels, rotation=45, ha="right", fontsize=7)
    low = min(min(e["diversity"]["best_member_accuracy"] for e in entries), 1.0)
    left.set_ylim(max(0.0, low - 0.1), 1.0)
    left.set_ylabel("test accuracy")
    left.legend(fontsize=7)
    for e, label in zip(entries, labels, strict=True):
        right.scatter(e["diversity"]["mean_disagreement"], e["diversity"]["gain_over_best_member"])
        right.annotate(label, (e["diversity"]["mean_disagreement"],
                               e["diversity"]["gain_over_best_member"]), fontsize=7)
    right.axhline(0, color="gray", linewidth=0.5)
    right.set_xlabel("mean pairwise disagreement (test)")
    right.set_ylabel("gain over best member (test accuracy)")
    figure.suptitle(f"{results['task']}: ensembles, protocol {results['protocol']} (test)",
                    fontsize=9)
    figure.tight_layout()
    path = Path(workdir) / "ensembles.png"
    figure.savefig(path)
    plt.close(figure)
    return [path]


def curves_markdown(results: dict) -> str:
    lines = [f"# Learning curves on {results['task']}", "", _protocol_line(results["protocol"]),
             f"Final seeds {results['seeds']}; tuning seeds {results['tuning_seeds']}; each "
             "point is its own tuned run (cached in points/).", "",
             "## Over data (test loss at the end of training)", ""]
    rows = []
    for key, curve in results["data_curves"].items():
        fit = curve.get("fit") or {}
        extra = curve.get("extrapolation") or {}
        rows.append([key, " ".join(f"{v:.3f}" for v in curve["test_loss_mean"]),
                     " ".join(f"{v:.3f}" for v in curve["test_accuracy_mean"]),
                     fit.get("exponent"), fit.get("exponent_stderr"), fit.get("asymptote"),
                     _interval(extra)])
    lines.append(f"fractions {results['fractions']} of {results['num_train']} train rows\n")
    lines.append(markdown_table(["optimizer/size", "test loss", "test acc", "exponent b",
                                 "b stderr", "asymptote c", "extrapolated (2x data)"], rows))
    lines += ["## Over budget (each budget its own tuned run)", ""]
    rows = [[k, " ".join(f"{v:.3f}" for v in c["test_loss_mean"]),
             " ".join(f"{v:.3f}" for v in c["train_loss_mean"]),
             " ".join(f"{v:.2g}" for v in c["learning_rates"])]
            for k, c in results["budget_curves"].items()]
    lines.append(f"budgets {results['budgets']} steps\n")
    lines.append(markdown_table(["optimizer/size", "test loss", "final train loss",
                                 "tuned lr"], rows))
    lines += ["## Crossings (bootstrap over seeds)", ""]
    rows = [[c["curve"], c["a"], c["b"], c["crossing"], c["low"], c["high"],
             c["fraction_crossing"], c["sign_before"]] for c in results["crossings"]]
    lines.append(markdown_table(["curve", "a", "b", "crossing", "low", "high",
                                 "P(cross)", "before"], rows)
                 if rows else "no pairs to compare\n")
    trade = results.get("tradeoffs")
    lines += ["## Trade-offs", ""]
    if trade:
        lines.append(f"From {trade['source']} (protocol {trade['protocol']}); quality = "
                     f"{trade['quality_name']}, median over tasks.\n")
        lines.append(markdown_table(
            ["optimizer", "quality", "ms/step", "state B/param", "meta-train s", "Pareto"],
            [[p["label"], p["quality"], p["cost"]["ms_per_step"],
              p["cost"]["state_bytes_per_param"], p["cost"]["meta_train_wall_s"],
              ",".join(p["pareto"])] for p in trade["points"]]))
    else:
        lines.append("No benchmark results.json given (config.benchmark_results): skipped.\n")
    pr = results.get("pr_curves", {})
    if pr:
        lines += ["## Precision-recall per class (test, full data, seed 0)", ""]
        lines.append(markdown_table(
            ["model", "mean AP", "min AP"],
            [[k, v["mean_average_precision"], v["min_average_precision"]]
             for k, v in pr.items()]))
    return "\n".join(lines)


def _interval(extra: dict) -> str:
    if not extra:
        return "-"
    return f"{extra['mean'][0]:.3f} [{extra['low'][0]:.3f}, {extra['high'][0]:.3f}]"


def curve_figure(results: dict, kind: str, path) -> Path:
    plt = _pyplot()
    curves = results["data_curves" if kind == "data" else "budget_curves"]
    figure, axis = plt.subplots(figsize=(6, 4.5))
    for i, (key, curve) in enumerate(curves.items()):
        x = curve["x"]
        axis.errorbar(x, curve["test_loss_mean"], yerr=curve["test_loss_std"], marker="o",
                      color=f"C{i}", label=key, capsize=2)
        if curve.get("fit_curve"):
            axis.plot(curve["fit_curve"]["x"], curve["fit_curve"]["y"], color=f"C{i}",
                      linestyle=":")
    axis.set_xscale("log")
    axis.set_xlabel("train examples" if kind == "data" else "step budget")
    axis.set_ylabel("test loss")
    axis.set_title(f"{results['task']}: test loss vs {kind}, protocol {results['protocol']}, "
                   f"seeds {results['seeds']}", fontsize=8)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return Path(path)
