"""SAEBench-style evals. Each module is one eval stage: (SAE artifact, model, held-out data) -> SAEBench JSON."""
