"""The architecture's promise, exercised: adding an eval is one package plus one registry line, and it
then shows up in the config, the plan, the stages that run and the report."""

from __future__ import annotations

import importlib
import json
import textwrap
from pathlib import Path

import pytest

from evals.registry import EVALS
from pipeline.executors.local import run_local
from pipeline.loading import parse_config
from pipeline.plan import build_plan
from pipeline.progress import Reporter
from pipeline.stages.registry import KINDS, eval_kind
from tests.conftest import tiny_config

L0_ONLY = {
    "__init__.py": '''
        from evals.contract import EvalDef
        from l0_only.config import L0Config
        from l0_only.output import REPORTED

        EVAL = EvalDef("l0_only", 1, L0Config, "l0_only", REPORTED, prep="l0_only")
    ''',
    "config.py": '''
        from pipeline.config import EvalConfig

        class L0Config(EvalConfig):
            n_vectors: int = 16
            """Random inputs to encode."""
    ''',
    "output.py": '''
        import json

        from pydantic import BaseModel

        from pipeline.kinds import Metric, Reported

        class L0Output(BaseModel):
            mean_l0: float

            def to_json_file(self, path: str, indent: int = 2) -> None:
                with open(path, "w") as f:
                    json.dump(self.model_dump(), f, indent=indent)

        REPORTED = Reported("L0 on random vectors", "l0_only.json", lambda r: {"random_l0": r["mean_l0"]},
                            {"random_l0": Metric(None, headline=True)})
    ''',
    "prepare.py": '''
        def prepare(env, params, sink):
            return {}
    ''',
    "evaluate.py": '''
        import torch

        from l0_only.output import L0Output

        def evaluate(prepared, sae, env, params):
            x = torch.randn(params.n_vectors, sae.cfg.d_in, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                l0 = float((sae.encode(x) != 0).float().sum(-1).mean())
            return L0Output(mean_l0=l0), {"mean_l0": l0}
    ''',
}


def test_new_eval_appears_in_plan_and_report(tiny_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, store, train = tiny_run
    package = tmp_path / "l0_only"
    package.mkdir()
    for name, text in L0_ONLY.items():
        (package / name).write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    definition = importlib.import_module("l0_only").EVAL
    monkeypatch.setitem(EVALS, definition.name, definition)  # the one registry line
    monkeypatch.setitem(KINDS, f"eval_{definition.name}", eval_kind(definition))

    raw = tiny_config(name="tiny_l0", evals={"core": {"enabled": False}, "l0_only": {"enabled": True, "n_vectors": 8}})
    cfg = parse_config(raw)
    stages = build_plan(cfg)
    labels = [s.label for s in stages]
    assert {"eval_prep:l0_only", "eval_l0_only:btk-s0"} <= set(labels), labels
    assert next(s for s in stages if s.kind == "train").key == train.key  # the tiny run's SAE, cached
    with pytest.raises(Exception, match=r"evals.l0_only.n_vector: unknown key"):
        parse_config(tiny_config(evals={"l0_only": {"n_vector": 8}}))

    outcomes = run_local(cfg, stages, store, set(), Reporter(enabled=False))
    assert {o.stage.label: o.status for o in outcomes if o.status != "cached"} == {
        "eval_prep:l0_only": "ran", "eval_l0_only:btk-s0": "ran", "report": "ran",
    }, [(o.stage.label, o.status, o.error[-500:]) for o in outcomes]
    summary = json.loads((store.root / "tiny_l0" / "summary.json").read_text())
    [row] = summary["saes"]
    assert 0 < row["random_l0"] <= 256 and "random_l0" in summary["headline"]
    assert "## L0 on random vectors" in (store.root / "tiny_l0" / "report.md").read_text()


def test_a_preempted_stage_ends_the_local_run(tiny_run, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM during training (Preempted: checkpoint saved) must stop the run, not move on to the next
    stage: the scheduler is about to kill the job."""
    from pipeline.executors import local
    from pipeline.training.preemption import Preempted

    _, store, _ = tiny_run
    cfg = parse_config(tiny_config(name="tiny_preempt", saes=[{"name": "p", "d_sae": 256, "k": 8, "train_tokens": 2048}]))
    stages = build_plan(cfg)
    ran: list[str] = []

    def execute(cfg, store, stage, reporter):  # the train stage is told to stop; nothing else may start
        ran.append(stage.label)
        if stage.kind == "train":
            raise Preempted(f"{stage.label}: SIGTERM at step 3; checkpoint saved, re-run to resume")
        return local_execute(cfg, store, stage, reporter)

    local_execute = local.execute
    monkeypatch.setattr(local, "execute", execute)
    outcomes = run_local(cfg, stages, store, set(), Reporter(enabled=False))
    train = next(o for o in outcomes if o.stage.kind == "train")
    assert train.status == "failed" and "SIGTERM" in train.error
    assert ran[-1] == train.stage.label and outcomes[-1] is train  # nothing started after it
