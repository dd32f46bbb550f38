"""`trainer: sae_lens` is sae-lens as users run it: per architecture, our train stage driving sae-lens's
training SAE gives exactly the loss curve and weights of sae-lens's own SAETrainer on the same batches
and seed; the settings that differ from sae-lens's defaults are the ones the config wrote; a
checkpointed, SIGTERM'd and resumed run equals the uninterrupted one bit for bit; the saved SAE opens
with sae-lens's ``SAE.load_from_disk`` and reconstructs its training data."""

from __future__ import annotations

import itertools
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import pipeline.stages.train as train_module
from pipeline.artifacts import ArtifactStore, sha256_file
from pipeline.data.shards import SHARD_DIR, ShardIndex
from pipeline.executors.stage_runner import execute
from pipeline.loading import parse_config
from pipeline.progress import Reporter
from pipeline.training.preemption import Preempted
from pipeline.training.stream import ShardStream, as_tensor
from tests.tiny_shards import train_config, train_stage, write_activations

QUIET = Reporter(enabled=False)
D_IN, D_SAE, K, BATCH, STEPS, LR = 16, 64, 4, 64, 100, 3e-3
DEAD_WINDOW = 5
"""Passes without firing before a latent is dead: short, so AuxK (or JumpReLU's warm-up) acts in 100 steps."""

ARCHITECTURES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # name: (our SAE spec's extra fields, the same SAE as sae-lens's own config kwargs)
    "topk": ({"recipe": {"activation": "topk"}}, {"k": K}),
    "batchtopk": ({}, {"k": K}),
    "matryoshka": ({"recipe": {"matryoshka": {"levels": [16, D_SAE]}}}, {"k": K, "matryoshka_widths": [16, D_SAE]}),
    "jumprelu": (
        {"recipe": {"activation": "jumprelu"}, "sae_lens_config": {"l0_warm_up_steps": 10}},
        {"l0_warm_up_steps": 10},
    ),
}


def sae_lens_pair(name: str) -> tuple[type, type]:
    from sae_lens import (
        BatchTopKTrainingSAE,
        BatchTopKTrainingSAEConfig,
        JumpReLUTrainingSAE,
        JumpReLUTrainingSAEConfig,
        MatryoshkaBatchTopKTrainingSAE,
        MatryoshkaBatchTopKTrainingSAEConfig,
        TopKTrainingSAE,
        TopKTrainingSAEConfig,
    )

    return {
        "topk": (TopKTrainingSAE, TopKTrainingSAEConfig),
        "batchtopk": (BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig),
        "matryoshka": (MatryoshkaBatchTopKTrainingSAE, MatryoshkaBatchTopKTrainingSAEConfig),
        "jumprelu": (JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig),
    }[name]


def stage_run(tmp_path: Path, name: str, **sae: Any) -> tuple[ArtifactStore, Any, Path]:
    """Our train stage on the tiny shards: (store, stage, artifact folder)."""
    cfg = parse_config(train_config(trainer="sae_lens", dead_after_tokens=DEAD_WINDOW * BATCH, **sae))
    store = ArtifactStore(tmp_path / name)
    write_activations(store, cfg)
    train = train_stage(cfg)
    return store, train, execute(cfg, store, train, QUIET)


def stage_batches(store: ArtifactStore, train: Any) -> list[torch.Tensor]:
    """The batches the stage trained on, in order (the stream is a pure function of seed and row)."""
    acts = store.path("activations", train.inputs["activations"].key)
    stream = ShardStream(acts / SHARD_DIR, ShardIndex.load(acts), seed=0, window=train.params["shuffle_shards"])
    return list(itertools.islice(stream.batches(0, BATCH, window_as=as_tensor), STEPS))


def sae_lens_own_run(name: str, batches: list[torch.Tensor], folder: Path) -> list[float]:
    """sae-lens's SAETrainer.fit on `batches`, its SAE built from sae-lens's own config at its defaults
    (plus the shape and the test's two settings); returns its loss per step and saves its SAE."""
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    class Recording(SAETrainer):
        losses: list[float]

        def step(self, batch: torch.Tensor) -> Any:
            out = super().step(batch)
            self.losses.append(out.loss.item())
            return out

    sae_cls, cfg_cls = sae_lens_pair(name)
    torch.manual_seed(0)
    sae = sae_cls(cfg_cls(d_in=D_IN, d_sae=D_SAE, **ARCHITECTURES[name][1]))
    cfg = SAETrainerConfig(  # lr_end: what sae-lens's runners fill in (lr / 10); the constant schedule ignores it
        total_training_samples=STEPS * BATCH, train_batch_size_samples=BATCH, lr=LR, lr_end=LR / 10, dead_feature_window=DEAD_WINDOW
    )
    trainer = Recording(cfg=cfg, sae=sae, data_provider=iter(batches))
    trainer.losses = []
    trainer.fit()
    sae.save_inference_model(folder)
    return trainer.losses


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_stage_equals_sae_lens_own_trainer(tmp_path: Path, name: str) -> None:
    """Tolerance: none. Same init, batches, dead masks, coefficients, clip and Adam steps, so every
    step's loss and the saved weights are equal to the bit."""
    store, train, folder = stage_run(tmp_path, name, **ARCHITECTURES[name][0])
    ours = [entry["loss"] for entry in json.loads((folder / "train_log.json").read_text())["steps"]]
    batches = stage_batches(store, train)
    theirs = sae_lens_own_run(name, batches, tmp_path / "theirs")
    assert len(ours) == len(theirs) == STEPS
    assert ours == theirs
    assert ours[-1] < 0.5 * ours[0]  # it learned: the equality is not of two untrained runs
    mine, ref = load_file(folder / "sae" / "sae_weights.safetensors"), load_file(tmp_path / "theirs" / "sae_weights.safetensors")
    assert mine.keys() == ref.keys() and all(torch.equal(mine[n], ref[n]) for n in mine)

    summary = store.manifest("train", train.key)["summary"]
    assert summary["trainer"] == "sae_lens"
    written = {"l0_warm_up_steps": [10, 0]} if name == "jumprelu" else {}
    assert summary["differs_from_reference"] == {"lr": [LR, 3e-4], "dead_feature_window": [DEAD_WINDOW, 1000]} | written

    from sae_lens import SAE

    sae = SAE.load_from_disk(str(folder / "sae"))
    x = torch.cat(batches[-10:])
    with torch.no_grad():
        codes = sae.encode(x)
        fvu = (sae.decode(codes) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert fvu < 0.5, fvu
    l0 = (codes != 0).sum(-1).float().mean()
    # TopK keeps k; the BatchTopK threshold (an EMA from 0 at rate 0.01) is still low after 100 steps, so
    # inference L0 is ~14 for k 4; JumpReLU at sae-lens's defaults is still dense here (L0 ~38 of 64)
    assert l0 <= {"topk": K, "batchtopk": 5 * K, "matryoshka": 5 * K, "jumprelu": D_SAE}[name], l0


def test_written_recipe_fields_reach_sae_lens_and_unwritten_ones_keep_its_defaults(tmp_path: Path) -> None:
    from pipeline.config.recipe import RecipeSpec
    from pipeline.training.reference import sae_lens_config

    spec = parse_config(train_config(trainer="sae_lens", recipe={"aux_k": {"coefficient": 0.25}, "decoder": {"norm": "project"}})).saes[0]
    cfg = sae_lens_config(RecipeSpec.model_validate(spec.identity()["recipe"]), D_IN, D_SAE, K, {})
    assert (cfg.aux_loss_coefficient, cfg.rescale_acts_by_decoder_norm, cfg.decoder_init_norm) == (0.25, False, 0.1)
    default = parse_config(train_config(trainer="sae_lens")).saes[0]
    cfg = sae_lens_config(RecipeSpec.model_validate(default.identity()["recipe"]), D_IN, D_SAE, K, {})
    assert (cfg.aux_loss_coefficient, cfg.rescale_acts_by_decoder_norm, cfg.topk_threshold_lr) == (1.0, True, 0.01)
    assert "dead_after_tokens" not in default.identity()  # unwritten: sae-lens's 1000 passes, not our 200k tokens
    with pytest.raises(ValueError, match=r"^sae_lens_config\.nope: not a field of sae-lens's BatchTopKTrainingSAEConfig"):
        sae_lens_config(RecipeSpec(), D_IN, D_SAE, K, {"nope": 1})
    with pytest.raises(ValueError, match=r"^recipe\.aux_k\.k_aux: sae-lens always uses d_in // 2 = 8"):
        sae_lens_config(RecipeSpec.model_validate({"aux_k": {"k_aux": 3}}), D_IN, D_SAE, K, {})


def test_recipe_settings_sae_lens_has_not_are_refused_in_one_line() -> None:
    from pipeline.config import ConfigError

    for recipe, what in [
        ({"activation": "relu_l1"}, "trains topk, batchtopk (+ matryoshka) and jumprelu"),
        ({"aux_k": {"relu": True}}, "aux_k.relu true"),
        ({"matryoshka": {"levels": [16, 64], "detach_inner": True}}, "matryoshka.detach_inner"),
        ({"activation": "jumprelu", "jumprelu": {"threshold_param": "log"}}, "jumprelu.threshold_param log"),
    ]:
        with pytest.raises(ConfigError) as err:
            parse_config(train_config(trainer="sae_lens", recipe=recipe))
        [line] = err.value.problems
        assert what in line and "use trainer: saepipe" in line


@pytest.mark.parametrize("name", ["matryoshka", "jumprelu"])
def test_sigterm_checkpoint_and_resume_is_bit_for_bit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """SIGTERM right after the step-20 checkpoint (the loop then stops at step 20 without re-saving it: it used to
    crash renaming onto the existing checkpoint); re-running resumes from it."""
    sae = ARCHITECTURES[name][0]
    _, _, clean = stage_run(tmp_path, "clean", **sae)

    cfg = parse_config(train_config(trainer="sae_lens", dead_after_tokens=DEAD_WINDOW * BATCH, **sae))
    store = ArtifactStore(tmp_path / "killed")
    write_activations(store, cfg)
    train = train_stage(cfg)
    real, signalled = train_module.save_checkpoint, []

    def save_then_sigterm(folder: Path, step: int, *args: Any) -> Path:
        path = real(folder, step, *args)
        if step == 20 and not signalled:
            signalled.append(step)
            os.kill(os.getpid(), signal.SIGTERM)
        return path

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_sigterm)
    with pytest.raises(Preempted, match="SIGTERM at step 2[01]"):
        execute(cfg, store, train, QUIET)
    monkeypatch.setattr(train_module, "save_checkpoint", real)
    resumed = execute(cfg, store, train, QUIET)
    for f in ("sae/sae_weights.safetensors", "train_log.json"):
        assert sha256_file(resumed / f) == sha256_file(clean / f), f


def test_our_trainer_reports_each_difference_and_none_once_set_to_sae_lens_choices() -> None:
    from pipeline.config.recipe import RecipeSpec
    from pipeline.training.trainables import build_trainable

    def differences(recipe: dict[str, Any], lr: float, window: float) -> dict[str, list[Any]]:
        trainable = build_trainable("saepipe", RecipeSpec.model_validate(recipe), D_IN, D_SAE, K, 0, torch.device("cpu"), "sparse")
        return trainable.differences(lr, window, False)

    assert differences({}, LR, 97.5) == {
        "b_dec_init": ["data_mean", "zeros"],
        "decoder_init_norm": [1.0, 0.1],
        "rescale_acts_by_decoder_norm": [False, True],
        "aux_loss_coefficient": [1 / 32, 1.0],
        "k_aux": [512, D_IN // 2],
        "aux_scale_by_dead": [False, True],
        "aux_relu": [True, False],
        "lr": [LR, 3e-4],
        "dead_feature_window": [97.5, 1000],
    }
    as_sae_lens = {
        "b_dec_init": "zeros",
        "decoder": {"norm": "rescale", "init_norm": 0.1},
        "aux_k": {"coefficient": 1.0, "k_aux": D_IN // 2, "scale_by_dead": True, "relu": False},
    }
    assert differences(as_sae_lens, 3e-4, 1000) == {}
    assert differences({**as_sae_lens, "matryoshka": {"levels": [16, D_SAE], "detach_inner": True}}, 3e-4, 1000) == {"detach_inner": [True, None]}
    jumprelu = {"activation": "jumprelu", "b_dec_init": "zeros", "decoder": {"norm": "free", "init_norm": 0.1},
                "jumprelu": {"init_threshold": 0.01, "bandwidth": 0.05, "threshold_param": "direct"}}  # fmt: skip
    assert differences(jumprelu, 3e-4, 1000) == {}
    assert differences({**jumprelu, "jumprelu": {"init_threshold": 0.01, "bandwidth": 0.05}}, 3e-4, 1000) == {
        "jumprelu_threshold_param": ["log", "direct"]
    }
