"""Rebuild a pretrained card's benchmark figures from results.json files.

    python -m experiments.card_results --config.label=mlp_digits_mlp \
        --config.results=workdirs/b_heldout/results.json,workdirs/b_ood/results.json \
        [--config.card=learned_opt/pretrained/mlp_digits_mlp.json --config.write=True]

Without `write` it prints the block; with it, the card's `heldout_results` block is rebuilt,
prose included (`experiments.benchmarking.cards`); the git commit of each run comes from the
`env.json` beside its results.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments import cli
from experiments.benchmarking import cards


def _provenance(path: Path, result: dict) -> dict:
    env_path = path.parent / "env.json"
    git = json.loads(env_path.read_text()).get("git", {}) if env_path.is_file() else {}
    return {"results": str(path), "git_commit": git.get("commit"), "git_dirty": git.get("dirty"),
            "device": result.get("device")}


def main(config, workdir=None):
    del workdir  # the card is the output
    if not config.label or not config.results:
        raise ValueError("config.label and config.results (comma-separated paths) are required")
    paths = [Path(p) for p in cli.names(config.results)]
    results = [json.loads(p.read_text()) for p in paths]
    provenance = [_provenance(p, r) for p, r in zip(paths, results, strict=True)]
    if not config.write:
        print(json.dumps(cards.update_card({}, results, config.label, provenance)[
            "heldout_results"], indent=1))
        return
    if not config.card:
        raise ValueError("config.write=True needs config.card (the card file to update)")
    path = Path(config.card)
    card = cards.update_card(json.loads(path.read_text()), results, config.label, provenance)
    path.write_text(json.dumps(card, indent=1) + "\n")
    print(f"updated {path}")


if __name__ == "__main__":
    cli.run(main, config_help="card results config", default_config_file="card_results.py",
            workdir="none", lock_config=True)
