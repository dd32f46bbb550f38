"""SynthSAEBench-style ground truth: a synthetic model with known features, its activation shards,
and the evaluations that score SAEs against the true features (the spec is `pipeline.config.synthetic`;
`model.py` builds or loads it through sae-lens, `saved.py` keys a saved one, `stages.py` runs it)."""
