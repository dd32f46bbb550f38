"""A SLURM job's entry point: ``python -m pipeline.job run-stage CONFIG KEY ...``.

The same command line as ``pipeline.cli``, but SIGTERM is caught before the imports (several seconds of
torch, sae-lens, sae-bench): a time-limit warning that arrives while the job starts up is kept, and
training checkpoints and exits at its first step instead of the job dying without a checkpoint.
"""

import sys

from pipeline.training.preemption import catch_sigterm_early

catch_sigterm_early()

from pipeline.cli import main  # noqa: E402  (after the handler, on purpose)

sys.exit(main())
