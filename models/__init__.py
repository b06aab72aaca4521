"""models: flax NNX models, offline datasets, tasks and task families."""
