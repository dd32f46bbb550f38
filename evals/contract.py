"""The contract between an eval and the stages that run it: every eval, core and synthetic included.

An eval is a package ``evals/<name>/`` (config.py, prepare.py, evaluate.py, output.py, README.md) whose
``__init__`` declares ``EVAL = EvalDef(...)``; ``evals/registry.py`` lists them. It is split in two so
model work is shared across SAEs:

* ``prepare(env, params, sink) -> meta``: everything that depends on the model, the hook and the
  eval's data but not on any SAE (model activations on the eval's prompts, labels, probes on the
  model's own activations). Runs once per (model, hook, eval data) as a stage ``eval_prep``; large
  tensors go to ``sink`` in bounded chunks, small facts into the returned JSON-able ``meta``.
* ``evaluate(prepared, sae, env, params) -> (output, summary)``: the per-SAE part, one stage per
  (SAE, eval). ``output`` is sae-bench's pydantic eval output (written as SAEBench's JSON), ``summary``
  a flat dict of headline numbers for the report.

An eval that needs the model in the loop per SAE (unlearning clamps latents inside forward passes)
gets it from ``env.model()``; one that does not never loads it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from pipeline.config import EvalConfig
from pipeline.kinds import Reported
from pipeline.progress import Reporter

if TYPE_CHECKING:  # torch and the chunked files are imported when used: the registry stays light
    import torch

    from pipeline.data.chunked import ChunkedReader, ChunkedWriter, Opener


@dataclass(frozen=True)
class PrepSize:
    """What a prep's size depends on besides its own settings, known at plan time (no model loaded)."""

    d_model: int
    d_vocab: int | None
    """None when the model is not in ``pipeline.config.facts``: an estimate that needs it is unknown."""
    float_bytes: int
    """Bytes per element of the model's dtype (the activations a prep caches are in it)."""
    context_size: int | None
    """The run's context size, for preps that read the run's own corpus (``prep_reads_corpus``)."""


@dataclass(frozen=True)
class EvalDef:
    """One eval, as the plan, the stages and the report see it. Declared in the eval's ``__init__``."""

    name: str
    """Config section ``evals.<name>``, stage kind ``eval_<name>``."""
    version: int
    """Code version of ``eval_<name>`` (bump when the per-SAE result changes)."""
    config: type[EvalConfig]
    """The settings class (``evals/<name>/config.py``, a ``pipeline.config.EvalConfig``: ``enabled``, ``model``)."""
    package: str
    """Import path of the package; its ``prepare`` and ``evaluate`` modules are imported only to run."""
    reported: Reported
    """Result file, headline metrics with their better direction, title (``evals/<name>/output.py``)."""
    prep: str
    """Prep family: evals naming the same family and producing the same prep params share stages."""
    prep_version: int = 1
    """Code version of this family's ``prepare`` (bump when what it stores changes)."""
    runs_on: Literal["model", "synthetic"] = "model"
    """Which runs it applies to: a language model's, or a synthetic model's (whose ``synthetic_model``
    artifact its stages then read, through ``EvalEnv.synthetic_model``)."""
    evaluate: str = "evaluate"
    """Function in ``<package>.evaluate`` (SCR and TPP share one package)."""
    prep_exclude: tuple[str, ...] = ()
    """Settings only the per-SAE part reads: left out of the prep key, so changing them redoes no model work."""
    split_by: str | None = None
    """A list setting with one prep stage per element (sparse probing: one per dataset)."""
    prep_reads_corpus: bool = False
    """``prepare`` reads the run's own text (core: its held-out documents), so the data spec keys the prep."""
    sae_format: Literal["sae_bench", "folder"] = "sae_bench"
    """What ``evaluate`` gets as ``sae``: a sae-lens SAE standardised as sae-bench's runner does, or the
    checksum-verified SAE folder (synthetic loads saepipe's coder itself, LISTA and LOO included)."""
    variants: Callable[[dict[str, Any]], dict[str, dict[str, Any]]] | None = None
    """Settings -> one scored variant per entry: label suffix ('' or '+loo') -> that variant's settings.
    None: one stage per SAE with the settings as they are."""
    report_prep: str | None = None
    """The prep's ``meta`` is a run-level result the report shows under this name (synthetic's probe ceiling)."""
    prep_bytes: Callable[[dict[str, Any], PrepSize], int] | None = None
    """(one prep unit's settings, the model's sizes) -> bytes that prep writes, for the disk preflight.
    None: unknown (``pipeline plan`` shows '?')."""

    def prep_units(self, params: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Prep stages this eval reads: unit name -> the params that key that stage."""
        shared = {k: v for k, v in params.items() if k not in self.prep_exclude}
        if self.split_by is None:
            return {"all": shared}
        return {str(v): {**shared, self.split_by: [v]} for v in params[self.split_by]}

    def scored(self, params: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The per-SAE stages of one SAE: label suffix -> settings."""
        return {"": params} if self.variants is None else self.variants(params)

    def module(self, part: Literal["prepare", "evaluate"]) -> ModuleType:
        return importlib.import_module(f"{self.package}.{part}")


class TensorSink:
    """Where ``prepare`` puts tensors: ``append`` streams rows, ``put`` stores a whole (small) tensor."""

    def __init__(self, root: Path, max_bytes: int | None = None):
        """``max_bytes``: the largest part file (default ``pipeline.data.chunked.DEFAULT_MAX_BYTES``)."""
        self.root, self.max_bytes = root, max_bytes
        self.writers: dict[str, ChunkedWriter] = {}

    def append(self, name: str, rows: torch.Tensor) -> None:
        from pipeline.data import chunked

        if name not in self.writers:
            self.writers[name] = chunked.ChunkedWriter(self.root, name, self.max_bytes or chunked.DEFAULT_MAX_BYTES)
        self.writers[name].append(rows)

    def put(self, name: str, tensor: torch.Tensor) -> None:
        self.append(name, tensor.reshape(1) if tensor.dim() == 0 else tensor)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


class Prepared:
    """Read side of ``prepare``'s output: tensors by name (checksum-verified when from an artifact)."""

    def __init__(self, root: Path, meta: dict[str, Any], opener: Opener | None = None):
        self.root, self.meta, self.opener = root, meta, opener

    def names(self) -> list[str]:
        from pipeline.data.chunked import tensor_names

        return tensor_names(self.root)

    def reader(self, name: str) -> ChunkedReader:
        from pipeline.data.chunked import ChunkedReader

        return ChunkedReader(self.root, name, self.opener)

    def tensor(self, name: str) -> torch.Tensor:
        return self.reader(name).read()

    def batches(self, name: str, rows: int, reuse: bool = False) -> Iterator[torch.Tensor]:
        """``ChunkedReader.batches``: with ``reuse``, each batch is valid until the next."""
        return self.reader(name).batches(rows, reuse)


@dataclass
class EvalEnv:
    """What an eval may use besides its params: the model spec, a lazy model loader, progress."""

    model_spec: Any
    """pipeline.config.ModelSpec (name, hook, layer, dtype, device): the eval's own ``model`` if its
    section names one, else the run's; None on a synthetic run."""
    prepend_bos: bool
    """Whether the SAE's training contexts began with BOS (the run's data.prepend_bos)."""
    reporter: Reporter = field(default_factory=lambda: Reporter(enabled=False))
    label: str = ""
    """The SAE's id (e.g. 'matryoshka_k32-s0', '+loo' for a variant), or '' in ``prepare``."""
    run_name: str = ""
    loader: Callable[[], tuple[Any, Any]] | None = None
    data: Any = None
    """pipeline.config.DataSpec: the run's text (core's held-out documents); None on a synthetic run."""
    synthetic: Any = None
    """pipeline.config.synthetic.SyntheticSpec of a synthetic run (its seeds and sample counts)."""
    synthetic_loader: Callable[[], Any] | None = None
    """Loads the run's ``synthetic_model`` artifact (sae-lens's SyntheticModel)."""
    sae_k: int | None = None
    """The scored SAE's k as its spec names it (the train stage's ``k``: the L0 it is matched to where an
    eval matches L0); None in ``prepare``."""

    def model(self) -> tuple[Any, Any]:
        """(HookedTransformer, tokenizer), loaded once per process."""
        if self.loader is None:
            from pipeline.models.cache import get_model

            return get_model(self.model_spec)
        return self.loader()

    def synthetic_model(self) -> Any:
        if self.synthetic_loader is None:
            raise RuntimeError(f"{self.label or 'prepare'}: this run has no synthetic model (a language-model run)")
        return self.synthetic_loader()


def prepare_in_memory(prepare: Callable[..., dict[str, Any]], env: EvalEnv, params: Any, folder: Path,
                      max_bytes: int | None = None) -> Prepared:  # fmt: skip
    """Run a ``prepare`` into a plain folder and open the result (tests, benchmarks)."""
    sink = TensorSink(folder, max_bytes)
    meta = prepare(env, params, sink)
    sink.close()
    return Prepared(folder, meta)
