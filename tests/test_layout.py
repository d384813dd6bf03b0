"""The repository's shape, read with ast: the machinery never imports a paper stage, no module imports
another in a cycle, and imports sit at module top except those of optional dependencies."""
import ast
import os
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
STAGES = {"kd_loss", "generator", "bohb", "data", "train", "search", "retrain", "report", "teachers"}
OPTIONAL = {"ray", "timm", "matplotlib"}  # imported where used, with an install hint


def modules():
    """{dotted module name: its syntax tree} of the project's own code (not tests/ or bench/)."""
    found = {}
    for path in sorted(ROOT.glob("*.py")) + sorted(ROOT.glob("teachers/*.py")) + sorted(ROOT.glob("machinery/*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(), str(path))
    return found


def imported(name, node):
    """The project modules and top-level packages that an import node of module `name` names."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # from . import darts, inside the teachers package
        base = name if name in ("teachers", "machinery") else name.rsplit(".", 1)[0]
        return [f"{base}.{alias.name}" if not node.module else f"{base}.{node.module}" for alias in node.names]
    return [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]


def graph():
    mods = modules()
    g = nx.DiGraph()
    for name, tree in mods.items():
        g.add_node(name)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in imported(name, node):
                    if target in mods and target != name:
                        g.add_edge(name, target)
    return g, mods


def test_the_machinery_never_imports_a_stage():
    g, mods = graph()
    machinery = [m for m in mods if m.split(".")[0] == "machinery"]
    assert {"machinery.cli", "machinery.files", "machinery.pool", "machinery.capture"} <= set(machinery)
    for m in machinery:
        stages = [t for t in g.successors(m) if t.split(".")[0] in STAGES]
        assert not stages, f"{m} imports the stage(s) {stages}"


def test_no_module_imports_another_in_a_cycle():
    g, _ = graph()
    assert list(nx.simple_cycles(g)) == []


def test_imports_sit_at_module_top_except_optional_dependencies():
    for name, tree in modules().items():
        top = set(tree.body)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and node not in top:
                roots = {n.split(".")[0] for n in imported(name, node)}
                assert roots <= OPTIONAL, f"{name} line {node.lineno} imports {roots - OPTIONAL} inside a function"


def test_the_top_level_holds_the_papers_stages_and_no_other_module():
    top = {p.stem for p in ROOT.glob("*.py")}
    assert top == STAGES - {"teachers"}, top ^ (STAGES - {"teachers"})
    assert os.path.isdir(ROOT / "machinery") and os.path.isdir(ROOT / "teachers")
