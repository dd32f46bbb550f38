"""SAEBench-style evals, one package each (``evals/<name>/``: config, prepare, evaluate, output, README),
declared to the pipeline by ``EVAL = EvalDef(...)`` and listed in ``evals/registry.py``."""
