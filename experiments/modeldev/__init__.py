"""Model development: ensembles (bagging, boosting, stacking, diversity) and learning curves.

Modules, one concept each:
- `members`     tasks that train on chosen rows (`ResampledTask`) and the vmapped member trainer
- `combine`     averaged probabilities / mean, majority vote, and the member-output checks
- `bagging`     bootstrap-resampled members (and the plain seed ensemble)
- `boosting`    AdaBoost-SAMME over networks; scikit-learn's HistGradientBoosting baseline
- `stacking`    k-fold out-of-fold predictions and a logistic-regression meta-learner
- `diversity`   pairwise error correlation and disagreement, gain over the best member
- `curves`      power-law fits with extrapolation intervals, crossings with bootstrap intervals
- `tradeoffs`   Pareto fronts of quality vs cost from a benchmark run, per-class PR curves
- `ensemble_experiment`, `curve_experiment`, `report`: what the commands
  `experiments.ensembles` and `experiments.learning_curves` run and write

    from experiments.modeldev import bagging, members, combine
    train = members.make_member_trainer(task, lambda lr: optax.adam(lr), num_steps=400)
    bagged = bagging.train_bagging(task, train, jnp.float32(3e-3), num_members=5)
    combine.average_probs(members.member_outputs(task, bagged.params, "test"))
"""
