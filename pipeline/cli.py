"""`pipeline` command line: run, plan, status, verify, run-stage.

Exit codes: 0 success, 1 a stage failed, 2 the config (or a command-line argument) is wrong.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.table import Table

from pipeline import disk
from pipeline.artifacts import ArtifactStore
from pipeline.config import ConfigError, PipelineConfig
from pipeline.loading import load_config
from pipeline.plan import Stage, build_plan, downstream, select
from pipeline.progress import Reporter, console
from pipeline.stages.registry import kind_of


def _store(args: argparse.Namespace) -> ArtifactStore:
    return ArtifactStore(Path(args.artifacts).resolve())


def _load(args: argparse.Namespace) -> tuple[PipelineConfig, list[Stage]]:
    cfg, _ = load_config(args.config)
    return cfg, build_plan(cfg)


def planned_bytes(stage: Stage) -> int | None:
    estimate = kind_of(stage.kind).planned_bytes
    return estimate(stage) if estimate is not None else None


def to_write(stages: list[Stage], store: ArtifactStore, forced: set[str]) -> list[tuple[Stage, int | None]]:
    """The stages a run would compute (not done, or forced), with the bytes each will write."""
    from pipeline.state import stage_state

    return [(s, planned_bytes(s)) for s in stages if s.label in forced or stage_state(store, s) != "done"]


def cmd_plan(args: argparse.Namespace) -> int:
    from pipeline.state import stage_state

    cfg, stages = _load(args)
    store = _store(args)
    table = Table(title=f"plan for {cfg.name} ({len(stages)} stages)")
    table.add_column("stage", no_wrap=True)  # labels are what users grep for: never cut them
    table.add_column("kind")
    table.add_column("key", no_wrap=True)
    table.add_column("inputs", max_width=28)
    table.add_column("state")
    table.add_column("writes", justify="right", no_wrap=True)
    for s in stages:
        inputs = ", ".join(sorted(i.label for i in s.inputs.values()))
        if len(inputs) > 60:
            inputs = f"{len(s.inputs)} stages"
        table.add_row(s.label, s.kind, s.key, inputs, stage_state(store, s), disk.human(planned_bytes(s)))
    console.print(table)
    todo = to_write(stages, store, set())
    unknown = sum(n is None for _, n in todo)
    console.print(
        f"still to write: {disk.human(sum(n or 0 for _, n in todo))} in {len(todo)} stages"
        + (f" ({unknown} of unknown size, counted as 0)" if unknown else "")
        + f"; free on the artifact filesystem ({store.root}): {disk.human(disk.free_bytes(store.root))}",
        markup=False,
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Artifact state per stage; for a run submitted to SLURM, also each stage's job and failure log."""
    from pipeline.executors.slurm import jobs_path, print_status

    cfg, stages = _load(args)
    store = _store(args)
    if not jobs_path(cfg, store).exists():
        return cmd_plan(args)
    print_status(cfg, stages, store)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Full sha256 check of every artifact of the plan."""
    _, stages = _load(args)
    store = _store(args)
    bad = 0
    for s in stages:
        problems = store.problems(s.kind, s.key, full=True)
        if problems and problems != ["missing"]:
            bad += 1
            console.print(f"[red]{s.label}[/]: " + "; ".join(problems))
    console.print(f"{len(stages) - bad} of {len(stages)} stages have no corruption" if not bad else f"{bad} corrupt")
    return 1 if bad else 0


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.executors.local import run_local

    cfg, cfg_path = load_config(args.config)
    if args.executor and args.executor != cfg.executor.kind:
        cfg = cfg.model_copy(update={"executor": cfg.executor.model_copy(update={"kind": args.executor})})
    stages = build_plan(cfg)
    force: set[str] = set()
    for pattern in args.force or []:
        try:
            force |= select(stages, pattern)
        except ValueError as exc:
            console.print(f"[red]error:[/] {exc}")
            return 2
    store = _store(args)
    reporter = Reporter(enabled=not args.quiet)
    if not args.skip_disk_check and (short := disk.shortfall(to_write(stages, store, downstream(stages, force)), store.root)):
        console.print(f"[red]error:[/] {short}", soft_wrap=True)  # one line, however wide
        return 2
    if cfg.executor.kind == "slurm":
        from pipeline.executors.slurm import run_slurm

        return run_slurm(cfg, cfg_path.resolve(), stages, store, force, reporter, dry_run=args.dry_run, wait=args.wait)
    if args.dry_run:
        from pipeline.state import stage_state

        forced = downstream(stages, force) if force else set()
        todo = [s for s in stages if s.label in forced or stage_state(store, s) != "done"]
        for s in todo:
            console.print(f"would run {s.label} ({s.key})", markup=False)
        console.print(f"{len(todo)} of {len(stages)} stages would run (dry run: nothing computed)")
        return 0
    outcomes = run_local(cfg, stages, store, force, reporter)
    table = Table(title=f"{cfg.name}: summary")
    for col in ("stage", "key", "status", "seconds"):
        table.add_column(col)
    for o in outcomes:
        style = {"failed": "red", "skipped": "yellow", "ran": "green"}.get(o.status, "")
        table.add_row(o.stage.label, o.stage.key, f"[{style}]{o.status}[/]" if style else o.status, f"{o.seconds:.1f}")
    console.print(table)
    failed = [o for o in outcomes if o.status == "failed"]
    for o in failed:
        console.print(f"[red]{o.stage.label} failed[/]\n{o.error}")
    report = store.root / cfg.name / "report.md"
    if report.exists() and not failed:
        console.print(f"report: {report}")
    # Skipped stages wait on a failed input (already counted) or on another process that computes them.
    return 1 if failed else 0


def cmd_run_stage(args: argparse.Namespace) -> int:
    """Run stages by key in this one process (the body of a SLURM job: one stage, or a group of like
    evals sharing the loaded model). A stage already complete is a no-op; one that another process is
    computing is waited for, and is then usually complete. Exit 1 when any of them failed."""
    from pipeline.executors.stage_runner import run_stages

    cfg, stages = _load(args)
    by_key = {s.key: s for s in stages}
    unknown = [k for k in args.key if k not in by_key]
    if unknown:
        console.print(f"[red]error:[/] no stage with key {', '.join(map(repr, unknown))} in {cfg.name}'s plan (`pipeline plan` lists them)")
        return 2
    chosen = [by_key[k] for k in dict.fromkeys(args.key)]
    outcome = run_stages(cfg, _store(args), chosen, Reporter(enabled=not args.quiet))
    for s in chosen:
        state = {"ran": "complete", "cached": "is already complete"}.get(outcome[s.label], "FAILED")
        console.print(f"{s.label} ({s.key}) {state}", markup=False)
    if any(s.kind == "report" and outcome[s.label] != "failed" for s in chosen):
        from pipeline.executors.local import publish_report

        console.print(f"report: {publish_report(cfg, stages, _store(args))}")
    return 1 if "failed" in outcome.values() else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--artifacts",
        default=os.environ.get("SAEPIPE_ARTIFACTS", "artifacts"),
        help="artifact root (default: ./artifacts or $SAEPIPE_ARTIFACTS)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, help_text in (
        ("run", cmd_run, "run the whole DAG, skipping what is done and resuming what is partial"),
        ("plan", cmd_plan, "show the DAG: each stage, its key and whether it is cached"),
        ("status", cmd_status, "state of every stage (done / partial / corrupt / missing)"),
        ("verify", cmd_verify, "check every artifact's files against their sha256"),
        ("run-stage", cmd_run_stage, "run stages by key in one process (what a SLURM job executes)"),
    ):
        p = sub.add_parser(name, help=help_text, parents=[common])
        p.add_argument("config", help="a YAML path, or a name in configs/")
        p.set_defaults(func=func)
        if name == "run-stage":
            p.add_argument("key", nargs="+", help="the stages' keys, as `pipeline plan` shows them (several: one process)")
            p.add_argument("--quiet", action="store_true", help="no progress bars")
        if name == "run":
            p.add_argument("--force", action="append", metavar="STAGE", help="recompute STAGE (kind, label or key) and all that depends on it")
            p.add_argument("--quiet", action="store_true", help="no progress bars")
            p.add_argument(
                "--skip-disk-check",
                action="store_true",
                help="run even when the stages' estimated bytes exceed the artifact filesystem's free space",
            )
            p.add_argument(
                "--executor",
                choices=["local", "slurm"],
                help="where to run the stages (default: the config's executor.kind)",
            )
            p.add_argument(
                "--dry-run",
                action="store_true",
                help="show what would run (slurm: the jobs, their resources and dependencies; writes the scripts) "
                "and submit/compute nothing",
            )
            p.add_argument(
                "--wait",
                action="store_true",
                help="slurm: wait for the jobs to finish and print the outcome (default: return after submitting)",
            )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        console.print(f"[red]config error in {exc.source}[/]")
        for problem in exc.problems:
            console.print(f"  {problem}", markup=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
