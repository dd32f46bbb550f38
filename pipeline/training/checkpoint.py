"""Training checkpoints as safetensors + JSON (no pickles, no unbounded torch.save).

A checkpoint holds the SAE weights, the optimizer state, the data position, per-latent firing
statistics, RNG state and the loss log: everything needed for a resumed run to continue bit-for-bit.
Each is written to a temp folder and renamed, so the newest folder that exists is whole.
Checkpoints are device-independent: tensors are saved from CPU copies and loaded straight onto the
device training runs on, so a run checkpointed on a GPU resumes on a CPU and the other way round.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from pipeline.fsutil import fsync_dir, fsync_file

KEEP = 2


def _optimizer_tensors(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for idx, slots in state["state"].items():
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"opt.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value.cpu() if name == "step" else value  # Adam keeps its step on the CPU
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    folder: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    extra_tensors: dict[str, torch.Tensor],
    info: dict[str, Any],
) -> Path:
    final = folder / f"ckpt-{step:08d}"
    tmp = folder / f".tmp-ckpt-{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    opt_tensors, opt_meta = _optimizer_tensors(optimizer.state_dict())
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors |= opt_tensors | {f"extra.{k}": v.detach().cpu().contiguous() for k, v in extra_tensors.items()}
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    save_file(tensors, tmp / "state.safetensors")
    (tmp / "info.json").write_text(json.dumps({"step": step, "optimizer": opt_meta, **info}))
    for f in tmp.iterdir():
        fsync_file(f)
    tmp.rename(final)
    fsync_dir(folder)
    for old in sorted(folder.glob("ckpt-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(folder: Path) -> Path | None:
    found = sorted(p for p in folder.glob("ckpt-*") if (p / "info.json").exists())
    return found[-1] if found else None


def read_info(path: Path) -> dict[str, Any]:
    """A checkpoint's JSON part (step, log, the ops it was trained with), without its tensors."""
    return json.loads((path / "info.json").read_text())


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Restore model, optimizer and RNG in place; return (extra tensors on `device`, info).

    Tensors are mapped to `device` as they are read (safetensors' map_location), whatever device
    wrote them. The CPU RNG is always restored, the CUDA one when both runs have CUDA.
    """
    tensors = load_file(path / "state.safetensors", device=str(device))
    info = read_info(path)
    model.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
    optimizer.load_state_dict(_optimizer_state(tensors, info.pop("optimizer")))
    torch.set_rng_state(tensors["rng.torch"].cpu())
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"].cpu())
    extra = {k.removeprefix("extra."): v for k, v in tensors.items() if k.startswith("extra.")}
    return extra, info
