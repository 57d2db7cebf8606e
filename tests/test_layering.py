"""The package's layers point one way (every import, function-level ones included, read with ``ast``):

    cfgrl/cli.py                         the command line: dispatches to every stage and the pipeline
    pipeline                             the stages chained (round, ablate, demo, spread)
    collect, value, label, train, evaluate  the stages
    rollout                              the rollout engine that collect and evaluate share
    store, policy, envs, config, ...     the foundations

A module imports from its own layer or below, never above; only ``cfgrl/cli.py`` imports a stage's
command module (``*/cli.py``), and only command modules use the command-line helpers."""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest

import cfgrl

ROOT = Path(cfgrl.__file__).parent
STAGES = ("collect", "value", "label", "train", "evaluate", "lerobot_data")
LAYERS = {"rollout": 1, **dict.fromkeys(STAGES, 2), "pipeline": 3, "cli": 4}  # everything else: 0
COMMAND_HELPERS = "cfgrl.cli_common"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(path: Path, node: ast.ImportFrom) -> list[str]:
    """The cfgrl modules a ``from ... import ...`` names (a submodule when ``name`` is one)."""
    if node.level:
        package = module_name(path).split(".")
        if path.name != "__init__.py":
            package = package[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    found = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        is_module = (ROOT.parent / sub.replace(".", "/")).with_suffix(".py").is_file() or (ROOT.parent / sub.replace(".", "/")).is_dir()
        found.append(sub if is_module else base)
    return found


@lru_cache(maxsize=None)
def imports() -> dict[str, set[str]]:
    """Every cfgrl module -> the cfgrl modules it imports anywhere in its body."""
    table = {}
    for path in sorted(ROOT.rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                names.update(resolve(path, node))
        table[module_name(path)] = {n for n in names if n == "cfgrl" or n.startswith("cfgrl.")}
    return table


def package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer(module: str) -> int:
    return LAYERS.get(package(module), 0)


def is_command_module(module: str) -> bool:
    return module == "cfgrl.cli" or module.endswith(".cli")


def test_the_parser_sees_function_level_and_relative_imports():
    found = imports()
    assert "cfgrl.pipeline.rounds" in found["cfgrl.cli"]  # imported inside inspect_command
    assert "cfgrl.collect.run" in found["cfgrl.pipeline.stages"]  # inside stages.collect
    assert "cfgrl.evaluate.runner" in found["cfgrl.evaluate"]  # `from cfgrl.evaluate import runner`
    assert {"cfgrl.policy.lerobot_format", "cfgrl.policy.config"} <= found["cfgrl.policy.checkpoint"]
    fake = ROOT / "policy" / "model.py"
    node = ast.parse("from ..rollout import engine\nfrom . import config").body
    assert resolve(fake, node[0]) == ["cfgrl.rollout.engine"] and resolve(fake, node[1]) == ["cfgrl.policy.config"]


@pytest.mark.parametrize("rule", ["layers point down", "only cfgrl.cli imports command modules",
                                  "only command modules use the command-line helpers"])
def test_imports_respect_the_layers(rule):
    bad = []
    for module, targets in imports().items():
        for target in sorted(targets):
            if rule == "layers point down" and layer(target) > layer(module):
                bad.append(f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})")
            if rule == "only cfgrl.cli imports command modules" and is_command_module(target) and module != "cfgrl.cli":
                bad.append(f"{module} imports the command module {target}")
            if rule == "only command modules use the command-line helpers" and target == COMMAND_HELPERS and not is_command_module(module):
                bad.append(f"{module} imports {target}")
    assert not bad, "\n".join(bad)


def test_no_stage_imports_another_stages_collect_or_the_pipeline():
    """Evaluate and collect share the engine (``cfgrl.rollout``), not each other's modules."""
    for module, targets in imports().items():
        if layer(module) == 2:
            crossing = {t for t in targets if package(t) in ("collect", "pipeline") and package(t) != package(module)}
            assert not crossing, f"{module} imports {sorted(crossing)}"
        if package(module) == "rollout":
            stages = {t for t in targets if layer(t) >= 2}
            assert not stages, f"the rollout engine's {module} imports {sorted(stages)}"
