"""`python -m experiments.card_results`: which results feed which card."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.label = ""     # the optimizer's label in results.json
    config.results = ""   # comma-separated results.json paths
    config.card = ""      # pretrained card (.json) to update
    config.write = False  # write the card in place (else print the block)
    return config
