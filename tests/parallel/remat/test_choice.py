"""parallel.remat.choice: the cheapest-to-recompute policy that fits a budget, or a clear error."""

import pytest
from remat_problems import mlp_loss

from parallel import remat


@pytest.mark.slow  # compiles ~11 gradient programs
def test_choose_policy_respects_budgets_between_footprints(deep_mlp_args, deep_mlp_stats):
    footprint = {p: s.footprint_bytes for p, s in deep_mlp_stats.items()}
    assert footprint["none"] > footprint["full"], footprint
    order = list(remat.DEFAULT_CANDIDATES)  # cheapest recompute first
    # Budgets: roomy, between none and dots, between the dots policies and full.
    below_none = (footprint["none"] + footprint["dots"]) // 2
    above_full = (footprint["dots_no_batch"] + footprint["full"]) // 2
    for budget in [footprint["none"], below_none, above_full]:
        expected = next(p for p in order if footprint[p] <= budget)
        # Candidates given out of order are sorted by recompute cost.
        choice = remat.choose_policy(
            mlp_loss, *deep_mlp_args, budget_bytes=budget, candidates=order[::-1]
        )
        assert choice.policy == expected, (budget, footprint, choice.footprints)
        assert choice.stats.footprint_bytes <= budget
    with pytest.raises(ValueError, match=f"smallest footprint is {footprint['full']} bytes"):
        remat.choose_policy(mlp_loss, *deep_mlp_args, budget_bytes=footprint["full"] - 1)


def test_choose_policy_bad_input(deep_mlp_args):
    with pytest.raises(ValueError, match="budget_bytes must be positive"):
        remat.choose_policy(mlp_loss, *deep_mlp_args, budget_bytes=0)
    with pytest.raises(ValueError, match="valid policies"):
        remat.choose_policy(mlp_loss, *deep_mlp_args, budget_bytes=1, candidates=["max"])
