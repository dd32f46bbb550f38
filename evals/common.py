"""What every SAEBench eval here needs alike: quiet calls into sae-bench, hub datasets that fail in one
line saying what to do, and the header every SAEBench output object carries.

Light on purpose (no torch, no sae-bench at import): an eval's ``output`` module may import it.
"""

from __future__ import annotations

import contextlib
import io
import uuid
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime
from importlib.metadata import version
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from evals.contract import EvalEnv

T = TypeVar("T")

OFFLINE_HINT = (
    "run once with network access (or pre-download it into HF_DATASETS_CACHE and set HF_DATASETS_OFFLINE=1)"
)
"""How to get a hub dataset onto a machine; each eval adds its offline alternative."""


def saebench_version() -> str:
    """SAEBench's ``sae_bench_commit_hash`` field: we run the installed package, so its version says which."""
    return f"sae-bench=={version('sae-bench')}"


@contextlib.contextmanager
def silenced(stdout: bool = True, stderr: bool = True, categories: tuple[type[Warning], ...] = (Warning,)) -> Iterator[None]:
    """sae-bench prints per probe and epoch, draws tqdm bars and sklearn warns; none of it may reach the
    progress display. Choose the streams and warning categories to swallow."""
    with contextlib.ExitStack() as stack:
        if stdout:
            stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        if stderr:
            stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
        stack.enter_context(warnings.catch_warnings())
        for category in categories:
            warnings.simplefilter("ignore", category=category)
        yield


def quiet(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` with stdout, stderr and every warning swallowed."""
    with silenced():
        return fn(*args, **kwargs)


def reason(exc: BaseException, limit: int = 160) -> str:
    """An exception as one short line: its type and the first line of its message."""
    first = (str(exc).splitlines() or [""])[0][:limit]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def hub_error(eval_name: str, what: str, exc: BaseException, how: str) -> RuntimeError:
    """The one-line error for a dataset that cannot be loaded (offline, gated, not cached): what failed and
    what to do. The hub raises many exception types; the user needs the way out, not the traceback."""
    return RuntimeError(f"{eval_name}: cannot load {what} ({reason(exc)}); {how}")


def load_hub_dataset(eval_name: str, path: str, config: str | None = None, split: str | None = None, *,
                     how: str) -> Any:  # fmt: skip
    """``datasets.load_dataset(path, config, split=split)``, failing with ``hub_error``'s one line."""
    import datasets

    try:
        return datasets.load_dataset(path, config, split=split)
    except Exception as exc:  # noqa: BLE001 - any failure gets the same one line
        name = path + (f" ({config})" if config else "")
        what = f"dataset '{name}'" + (f", split {split!r}" if split else "")
        raise hub_error(eval_name, what, exc, how) from None


def saebench_header(sae: Any, env: EvalEnv) -> dict[str, Any]:
    """The fields every SAEBench output object carries besides its eval's config and results."""
    metadata = getattr(sae.cfg, "metadata", None)
    return {
        "eval_id": str(uuid.uuid4()),
        "datetime_epoch_millis": int(datetime.now().timestamp() * 1000),
        "sae_bench_commit_hash": saebench_version(),
        "sae_lens_id": env.label or None,
        "sae_lens_release_id": env.run_name or None,
        "sae_lens_version": getattr(metadata, "sae_lens_version", None) or version("sae-lens"),
        "sae_cfg_dict": sae.cfg.to_dict(),
    }


def saebench_output(output_class: Callable[..., T], eval_config: Any, sae: Any, env: EvalEnv, **results: Any) -> T:
    """sae-bench's output object (its ``eval_type_id`` default included): the eval's config and results
    (``eval_result_metrics``, ``eval_result_details``, ``eval_result_unstructured``...) plus the header."""
    return output_class(eval_config=eval_config, **saebench_header(sae, env), **results)
