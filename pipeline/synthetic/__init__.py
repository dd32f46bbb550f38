"""SynthSAEBench-style ground truth: a synthetic model with known features, its activation shards,
and the evaluations that score SAEs against the true features (see `spec.py`, `model.py`, `stages.py`)."""
