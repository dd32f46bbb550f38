"""Save a SparseCoder in sae-lens's on-disk format and load it back with its full recipe.

`save_coder(coder, folder)` writes
  * cfg.json + sae_weights.safetensors: the closest sae-lens inference architecture, so
    `sae_lens.SAE.load_from_disk(folder)` opens it:
      batchtopk -> "jumprelu" (threshold = the fitted inference threshold), topk -> "topk" (k),
      jumprelu -> "jumprelu", relu_l1 -> "standard".
  * saepipe_coder.safetensors: the coder's full state (buffers included).
`cfg.json["metadata"]["saepipe_recipe"]` holds the recipe, and `metadata.saepipe_inference_note`
says what sae-lens will NOT do: LISTA refinement steps and LOO pruning are not applied when sae-lens
runs the SAE (it runs the plain encoder), and Matryoshka/TERM/AuxK/orthogonality only shaped
training. `load_coder(folder)` restores the exact SparseCoder, recipe included.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sae_lens
from safetensors.torch import load_file, save_file

from pipeline.config.recipe import RecipeSpec
from pipeline.recipes.coder import SparseCoder, build_coder

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
CODER_FILE = "saepipe_coder.safetensors"


def inference_note(recipe: RecipeSpec) -> str:
    """What differs between sae-lens running the saved weights and `load_coder(...).encode`."""
    notes = []
    if recipe.lista is not None:
        notes.append(f"LISTA refinement ({recipe.lista.steps} step(s), eta={recipe.lista.eta}) is not applied by sae-lens")
    if recipe.loo is not None:
        notes.append(f"LOO pruning (tau={recipe.loo.tau}) is not applied by sae-lens")
    if not notes:
        return "sae-lens inference equals SparseCoder.encode/decode"
    return "; ".join(notes) + "; use pipeline.recipes.saving.load_coder(folder) for the full recipe"


def save_coder(coder: SparseCoder, folder: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write the sae-lens files and the full coder state into `folder` (created if missing)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    form = coder.state_for_saving()
    cfg: dict[str, Any] = {
        "architecture": form.architecture,
        "d_in": coder.d_in,
        "d_sae": coder.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        **form.cfg,
        "metadata": {
            **(metadata or {}),
            "sae_lens_version": sae_lens.__version__,
            "sae_lens_training_version": sae_lens.__version__,
            "saepipe_recipe": coder.recipe.model_dump(mode="json"),
            "saepipe_k": coder.k,
            "saepipe_seed": coder.seed,
            "saepipe_inference_note": inference_note(coder.recipe),
        },
    }
    (folder / CFG_FILE).write_text(json.dumps(cfg, indent=2))
    save_file({n: t.float().contiguous() for n, t in form.tensors.items()}, str(folder / WEIGHTS_FILE))
    state = {n: t.detach().contiguous() for n, t in coder.state_dict().items()}
    save_file(state, str(folder / CODER_FILE))
    return folder


def load_coder(folder: str | Path) -> SparseCoder:
    """Rebuild the SparseCoder saved by `save_coder`, with its recipe and all training statistics."""
    folder = Path(folder)
    cfg = json.loads((folder / CFG_FILE).read_text())
    meta = cfg["metadata"]
    recipe = RecipeSpec.model_validate(meta["saepipe_recipe"])
    coder = build_coder(recipe, cfg["d_in"], cfg["d_sae"], meta["saepipe_k"], meta.get("saepipe_seed", 0))
    coder.load_state_dict(load_file(str(folder / CODER_FILE)))
    return coder
