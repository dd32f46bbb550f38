"""The layering the architecture promises, checked on the source: no import cycles, arrows point down.

Every ``import`` counts, function-level ones included: a lazy import hides a cycle from Python, not
from a reader.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "evals")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports (``from a.b import c`` counts a.b, and a.b.c if a module)."""
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.add(node.module)
                deps |= {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _parents_excluded(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Drop edges to a module's own package ``__init__`` re-exports (``pipeline.config`` from a submodule)."""
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}


def test_no_import_cycles() -> None:
    cycle = find_cycle(_parents_excluded(import_graph()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_evals_do_not_import_stages_or_executors() -> None:
    bad = {
        m: sorted(d for d in deps if d.startswith(("pipeline.stages", "pipeline.executors")))
        for m, deps in import_graph().items()
        if m.startswith("evals")
    }
    assert not {m: d for m, d in bad.items() if d}


def test_config_is_the_bottom_layer() -> None:
    """pipeline.config imports nothing of the project outside itself, and nothing heavy."""
    outside = {
        m: sorted(d for d in deps if not d.startswith("pipeline.config") and d != "pipeline")
        for m, deps in import_graph().items()
        if m.startswith("pipeline.config")
    }
    assert not {m: d for m, d in outside.items() if d}
    code = "import sys, pipeline.config; heavy = {'torch', 'sae_lens', 'sae_bench', 'transformer_lens'} & set(sys.modules); assert not heavy, heavy"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


HEAVY_AT_RUN_ONLY = ("torch", "sae_lens", "sae_bench", "transformer_lens", "sklearn", "pandas")
"""Libraries a stage loads when it runs; `pipeline plan` and the SLURM submitter never need them (they
take seconds to import), and every torchrun rank's start-up needs only torch (the GPU machine may not
have the rest). Stage kinds name their run functions as strings (`pipeline.stages.registry`), so no
stage module is imported to plan. sae_bench and pandas come in through the evals' schemas and the
SCR/TPP fixture, so those import them where they build outputs or data."""


def test_plan_loads_no_heavy_library(tmp_path: Path) -> None:
    """`pipeline plan` of a language-model run and of a synthetic suite, in a fresh interpreter."""
    code = (
        "import sys\nfrom pipeline import cli\n"
        f"for name in ('default', 'synth_small'):\n    assert cli.main(['plan', name, '--artifacts', {str(tmp_path)!r}]) == 0\n"
        f"print('loaded:' + ','.join(sorted(m for m in {HEAVY_AT_RUN_ONLY!r} if m in sys.modules)))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = proc.stdout.strip().splitlines()[-1].removeprefix("loaded:")
    assert loaded == "", f"`pipeline plan` imported {loaded}: import it inside the stage's run instead"
