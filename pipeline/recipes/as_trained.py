"""An SAE as it was trained, in the form sae-bench's evals take: a sae-lens SAE.

sae-lens's classes run the plain encoder of the saved architecture; a recipe with LISTA refinement or
LOO pruning encodes differently (``saving.inference_note``), so evals of the plain sae-lens SAE would
score a different, weaker SAE. ``load_as_trained(folder)`` returns sae-lens's class for the saved
architecture with ``encode`` replaced by our coder's (restored by ``load_coder``, sharing the SAE's
weight tensors). ``decode``, ``W_dec``, ``cfg`` and hooks stay sae-lens's, so sae-bench's code runs on
it unchanged; ``cfg.json`` keeps the standard architecture, so plain sae-lens still opens the folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sae_lens import SAE, JumpReLUSAE, StandardSAE, TopKSAE
from torch import Tensor

from pipeline.config.recipe import RecipeSpec
from pipeline.recipes.coder import SparseCoder
from pipeline.recipes.saving import CFG_FILE, load_coder

SHARED_WEIGHTS = ("W_enc", "b_enc", "W_dec", "b_dec")


class AsTrained:
    """Mixin over a sae-lens SAE class: ``encode`` is the trained coder's inference encode."""

    coder: SparseCoder

    def encode(self, x: Tensor) -> Tensor:
        sae: Any = self
        flat = sae.hook_sae_input(x.to(sae.dtype)).reshape(-1, x.shape[-1])
        acts = self.coder.encode(flat).dense(sae.cfg.d_sae)
        return sae.hook_sae_acts_post(acts.reshape(*x.shape[:-1], -1))


class AsTrainedJumpReLUSAE(AsTrained, JumpReLUSAE):
    """BatchTopK and JumpReLU recipes (saved as ``jumprelu``)."""


class AsTrainedTopKSAE(AsTrained, TopKSAE):
    """TopK recipes (saved as ``topk``)."""


class AsTrainedStandardSAE(AsTrained, StandardSAE):
    """ReLU + L1 recipes (saved as ``standard``)."""


AS_TRAINED: dict[type, type] = {JumpReLUSAE: AsTrainedJumpReLUSAE, TopKSAE: AsTrainedTopKSAE, StandardSAE: AsTrainedStandardSAE}


def saved_recipe(folder: Path) -> RecipeSpec | None:
    """The recipe ``save_coder`` recorded, or None for an SAE that sae-lens trained."""
    recipe = json.loads((folder / CFG_FILE).read_text()).get("metadata", {}).get("saepipe_recipe")
    return None if recipe is None else RecipeSpec.model_validate(recipe)


def sae_lens_runs_as_trained(recipe: RecipeSpec) -> bool:
    """Whether sae-lens's class for the saved architecture encodes as the coder does."""
    return recipe.lista is None and recipe.loo is None


def load_as_trained(folder: str | Path, device: str = "cpu") -> SAE[Any]:
    """The SAE in ``folder`` as a sae-lens SAE that encodes as it was trained."""
    folder = Path(folder)
    plain = SAE.load_from_disk(str(folder), device=device)
    recipe = saved_recipe(folder)
    if recipe is None or sae_lens_runs_as_trained(recipe):
        return plain
    sae = AS_TRAINED[type(plain)](plain.cfg, use_error_term=plain.use_error_term)
    sae.load_state_dict(plain.state_dict())
    sae = sae.to(device)
    coder = load_coder(folder).to(device)
    for name in SHARED_WEIGHTS:  # one set of weights: whatever moves or casts the SAE moves the coder's
        setattr(coder, name, getattr(sae, name))
    sae.coder = coder
    return sae
