"""experiments: runnable scripts, configs, tracking, tuning and reports."""
