"""Rebuild a pretrained card's benchmark figures from results.json files.

    python -m experiments.card_results --config.label=mlp_digits_mlp \
        --config.results=workdirs/b_heldout/results.json,workdirs/b_ood/results.json \
        [--config.card=learned_opt/pretrained/mlp_digits_mlp.json --config.write=True]

Without `write` it prints the block; with it, the card's `heldout_results` figures are replaced
(`experiments.benchmarking.cards`).
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments import cli
from experiments.benchmarking import cards


def main(config, workdir=None):
    del workdir  # the card is the output
    if not config.label or not config.results:
        raise ValueError("config.label and config.results (comma-separated paths) are required")
    results = [json.loads(Path(p).read_text()) for p in cli.names(config.results)]
    if not config.write:
        print(json.dumps({"tasks": cards.task_entries(results, config.label),
                          "counts": cards.counts(results, config.label)}, indent=1))
        return
    if not config.card:
        raise ValueError("config.write=True needs config.card (the card file to update)")
    path = Path(config.card)
    card = cards.update_card(json.loads(path.read_text()), results, config.label)
    path.write_text(json.dumps(card, indent=1) + "\n")
    print(f"updated {path}")


if __name__ == "__main__":
    cli.run(main, config_help="card results config", default_config_file="card_results.py",
            workdir="none", lock_config=True)
