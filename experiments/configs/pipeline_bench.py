"""`python -m experiments.pipeline_bench` (and `experiments.parallelism --config.mode=pp`):
pipeline bubble, memory and step-time measurements."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.bubble_stages = "2,4,8"
    config.bubble_microbatches = "1,2,4,8,16,32,64"
    config.num_stages = 4  # memory and timing runs
    config.width = 256
    config.hidden = 1024
    config.microbatch_size = 32
    config.memory_microbatches = "4,8,16,32"
    config.timing_microbatches = "4,16"
    config.timing_repeats = 5
    config.seed = 0
    config.num_cpu_devices = 8  # simulated devices when run directly on CPU
    return config
