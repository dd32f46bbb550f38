"""saepipe: YAML config -> cached activations -> trained SAEs -> SAEBench-style evals -> report."""
