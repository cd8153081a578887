"""House rules a newcomer can rely on, checked on the source tree (docs/layout.md):

1. No function or method in kfusion/, model/, pipeline/ or stages/ is longer than 80 lines.
2. Sub-packages import only what their layer may: data preparation never imports training
   or prediction, the model never imports the pipeline, and so on (RULES below).
3. Stage entry points are thin: about 60 lines each; the work lives in the library.
4. No module reaches into another module's private names (`other._name`).
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FOLDERS = {"kfusion": "kfusion", "model": "kfusion.model", "pipeline": "kfusion.pipeline",
           "stages": "kfusion.stages"}
MAX_FUNCTION_LINES = 80
MAX_STAGE_LINES = 60
# Importable from anywhere: the typed config, shape constants, device resolution.
BASE = ("kfusion.config", "kfusion.shapes", "kfusion.device")
# Layer -> what it may import from the project besides BASE (prefix match on dotted names).
RULES: dict[str, tuple[str, ...]] = {
    "kfusion.pipeline.io": (),
    "kfusion.pipeline.media": ("kfusion.pipeline.io",),
    "kfusion.pipeline.data": ("kfusion.pipeline.io", "kfusion.pipeline.media"),
    "kfusion.pipeline.demo": ("kfusion.pipeline.io", "kfusion.pipeline.media", "kfusion.pipeline.data"),
    "kfusion.pipeline.training": ("kfusion.pipeline.io", "kfusion.pipeline.data", "kfusion.model"),
    "kfusion.pipeline.predict": ("kfusion.pipeline.io", "kfusion.pipeline.media", "kfusion.pipeline.data",
                                 "kfusion.pipeline.training", "kfusion.model"),
    "kfusion.model": (),
    "kfusion.config": ("kfusion.pipeline.io",),   # dump() writes config.yaml atomically
    "kfusion.shapes": (), "kfusion.device": (),
}

def _modules():
    for folder, dotted in FOLDERS.items():
        for py in sorted((REPO / folder).rglob("*.py")):
            rel = py.relative_to(REPO / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            yield py, ".".join([dotted, *parts])


def _imports(tree: ast.AST, module: str, is_pkg: bool) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import -> absolute
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_pkg else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((node.lineno, name))
    return out


def _layer(module: str) -> str | None:
    best = None
    for layer in RULES:
        if module == layer or module.startswith(layer + "."):
            best = layer if best is None or len(layer) > len(best) else best
    return best


def test_no_function_is_longer_than_80_lines():
    long = set()
    for py, module in _modules():
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.add(f"{py.relative_to(REPO)}:{node.name}")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {sorted(long)}"


def test_sub_packages_import_only_their_layers():
    bad = []
    for py, module in _modules():
        layer = _layer(module)
        if layer is None:
            continue   # stages and the CLI may import anything
        allowed = (layer, *BASE, *RULES[layer])
        for line, name in _imports(ast.parse(py.read_text()), module, py.name == "__init__.py"):
            if not name.startswith(("kfusion", "model", "pipeline", "stages")):
                continue  # third-party or standard library
            if not any(name == a or name.startswith(a + ".") for a in allowed):
                bad.append(f"{py.relative_to(REPO)}:{line} imports {name}")
    assert not bad, "imports across layers (see RULES):\n" + "\n".join(bad)


def test_stage_entry_points_are_thin():
    fat = {p.name: n for p in (REPO / "stages").glob("*.py")
           if (n := len(p.read_text().splitlines())) > MAX_STAGE_LINES}
    assert not fat, \
        f"stages over {MAX_STAGE_LINES} lines (move the work into the library): {fat}"


def _own_private_names(tree: ast.AST) -> set[str]:
    """Private names this module defines: its functions, classes and `self._x` attributes."""
    own = {n.name for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    own |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name) and n.value.id == "self"}
    return {n for n in own if n.startswith("_")}


def test_no_access_to_another_modules_private_names():
    bad = []
    for py, module in _modules():
        tree = ast.parse(py.read_text())
        own = _own_private_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kfusion"):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.Attribute):
                names = [node.attr]
            else:
                continue
            bad += [(f"{py.relative_to(REPO)}", node.lineno, n) for n in names
                    if n.startswith("_") and not n.startswith("__") and n not in own]
    assert not bad, "private names used across modules:\n" + "\n".join(
        f"{f}:{line} uses {n}" for f, line, n in bad)
