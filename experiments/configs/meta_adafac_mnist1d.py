"""AdafacMLPLOpt meta-trained with PES on the mnist1d-MLP family (a shipped-optimizer recipe)."""

from experiments.configs import meta_base


def get_config():
    c = meta_base.pes_recipe("adafac_mlp", "mnist1d_mlp")
    return c
