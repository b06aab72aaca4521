"""MLPLOpt meta-trained with PES on the digits-MLP family (a shipped-optimizer recipe)."""

from experiments.configs import meta_base


def get_config():
    c = meta_base.pes_recipe("mlp", "digits_mlp")
    return c
