"""dvc.yaml lists, as each stage's deps, exactly the project modules its command runs.

The rule: a stage's command is `python -m pipeline <stage>`, which runs
pipeline/<stage>.py. Its modules are that file and every pipeline module it
imports, transitively, including imports inside functions (lazy imports run
too). Imports under `if TYPE_CHECKING:` are not followed: they never run.
Every such module must be a dep of the stage, and no other pipeline/*.py file
may be, so that editing a module re-runs exactly the stages that use it.

Exceptions, modules whose edits cannot change what a stage writes:
- pipeline/__init__.py, pipeline/__main__.py: the command line (argparse,
  dispatch, the one error line);
- pipeline/errors.py: the exception class that error line comes from;
- pipeline/generate.py: imported by __main__ for its own subcommand only;
- pipeline/params.py: reads and checks params.yaml; the values a stage uses
  are its `params:` in dvc.yaml, which DVC tracks itself;
- pipeline/paths.py: the fixed paths, each also spelled in dvc.yaml's deps and
  outs, so that changing one means changing dvc.yaml, which re-runs the stage.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT

PIPELINE = ROOT / "pipeline"
EXEMPT = {"__init__", "__main__", "errors", "generate", "params", "paths"}
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_modules(source: str, known: set[str]) -> set[str]:
    """Names (e.g. "model") of the pipeline modules in `known` that `source` imports, at any depth."""
    found: set[str] = set()
    stack = [ast.parse(source)]
    while stack:
        node = stack.pop()
        if _is_type_checking(node):
            stack.extend(node.orelse)  # the else branch does run
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "pipeline" and len(parts) > 1:
                    found.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            parts = (
                (node.module or "").split(".")
                if node.level == 0
                else ["pipeline", *(node.module or "").split(".")]
            )
            parts = [p for p in parts if p]
            if parts[:1] == ["pipeline"] and len(parts) > 1:
                found.add(parts[1])
            elif parts == ["pipeline"]:
                found |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module":
            raise AssertionError("importlib.import_module: a dynamic import the deps test cannot follow")
        stack.extend(ast.iter_child_nodes(node))
    return found & known


def stage_modules(stage: str) -> set[str]:
    """The stage's module and every pipeline module it imports, transitively."""
    known = {p.stem for p in PIPELINE.glob("*.py")}
    seen, todo = set(), [stage]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += imported_modules((PIPELINE / f"{name}.py").read_text(encoding="utf-8"), known)
    return seen


def test_the_import_finder_follows_lazy_imports_and_skips_type_checking():
    source = """
import torch
import pipeline.a
from pipeline import b, not_a_module
from pipeline.c import thing
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from pipeline.d import Params
else:
    import pipeline.e
def f():
    from pipeline import g
    from .h import x
"""
    known = {"a", "b", "c", "d", "e", "g", "h", "z"}
    assert imported_modules(source, known) == {"a", "b", "c", "e", "g", "h"}
    with pytest.raises(AssertionError, match="dynamic import"):
        imported_modules("import importlib\nimportlib.import_module('pipeline.x')", known)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_are_exactly_the_modules_its_command_imports(stage):
    spec = STAGES[stage]
    m = re.fullmatch(r"python -m pipeline (\w+)", spec["cmd"])
    assert m, f"dvc.yaml: {stage}: cmd {spec['cmd']!r} is not `python -m pipeline <stage>`; update this test"
    want = {f"pipeline/{name}.py" for name in stage_modules(m.group(1)) - EXEMPT}
    have = {d for d in spec.get("deps", []) if isinstance(d, str) and re.fullmatch(r"pipeline/\w+\.py", d)}
    assert not want - have, f"dvc.yaml: {stage}: add to deps: {sorted(want - have)}"
    assert not have - want, (
        f"dvc.yaml: {stage}: not imported by the stage, remove from deps: {sorted(have - want)}"
    )


BLOCKED = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"dvc", "dvclive", "prefect", "imagehash"}:
            raise ImportError(f"{name} is blocked")
sys.meta_path.insert(0, Block())
import pipeline.train, pipeline.sample, pipeline.evaluate, pipeline.generate
"""


def test_train_sample_and_evaluate_import_without_dvc_prefect_or_imagehash():
    """A GPU machine runs them with torch, torchvision, PIL, numpy, yaml and tqdm alone (DVCLive is optional)."""
    proc = subprocess.run([sys.executable, "-c", BLOCKED], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
