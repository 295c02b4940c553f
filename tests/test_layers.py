"""Import contracts: the package's layers, and imports point down only.

Every ``emonet_dist`` import of every module (lazy imports inside functions included) is read from the source with
``ast`` and checked against the layer order below: a module may import its own layer and the layers beneath it. A
new upward import fails this test (the negative control shows it), so the layering cannot erode unnoticed. Known
upward imports, if one must ever be tolerated, are listed with their reason; the test fails once one is gone.
"""

from __future__ import annotations

import ast
from pathlib import Path

from emonet_testkit import ROOT

# Lowest first. A name stands for the module and everything below it (longest prefix wins).
LAYERS: list[tuple[str, list[str]]] = [
    ("foundation", ["emonet_dist", "emonet_dist.errors", "emonet_dist.typed", "emonet_dist.names",
                    "emonet_dist.limits", "emonet_dist.config", "emonet_dist.progress", "emonet_dist.pool",
                    "emonet_dist.audio",
                    # numpy-only scores: what the training loop reports and what evaluation files hold
                    "emonet_dist.evaluate.metrics"]),
    ("corpora", ["emonet_dist.corpora"]),
    ("data", ["emonet_dist.data"]),
    ("model", ["emonet_dist.model"]),
    ("tracking", ["emonet_dist.tracking"]),  # the MLflow client: config in, runs and artifacts out
    ("bundles", ["emonet_dist.bundles"]),
    ("train", ["emonet_dist.train"]),
    ("evaluate", ["emonet_dist.evaluate", "emonet_dist.predict"]),
    ("baselines", ["emonet_dist.baselines"]),
    ("tuning", ["emonet_dist.tuning"]),
    # typed job specs and the one step runner; the demo is a shipped spec it runs
    ("pipeline", ["emonet_dist.pipeline", "emonet_dist.demo"]),
    ("client", ["emonet_dist.submit"]),  # the Ray job client: hands a spec to a cluster, follows its logs
    # parse and dispatch; the commands print (cli_commands, cli_jobs) and build their parser with cli_parser
    ("cli", ["emonet_dist.cli", "emonet_dist.cli_commands", "emonet_dist.cli_jobs", "emonet_dist.cli_parser"]),
]
KNOWN_UPWARD: dict[tuple[str, str], str] = {}  # (importer, imported) -> why it is still there


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(path: Path, package: Path) -> list[tuple[str, int]]:
    """``(imported module, line)`` of every import of the package in one file, lazy imports included."""
    me = module_name(path, package)
    here = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    name = package.name
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:  # `from pkg import module` imports that module
                sub = package.parent / f"{mod}.{alias.name}".replace(".", "/")
                out.append((f"{mod}.{alias.name}" if sub.with_suffix(".py").is_file() or sub.is_dir() else mod,
                            node.lineno))
        elif isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
    return [(m, line) for m, line in out if m == name or m.startswith(name + ".")]


def layer_of(module: str) -> int:
    best, layer = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, layer = len(p), i
    assert layer is not None, f"{module} is in no layer: add it to LAYERS"
    return layer


def upward_imports(package: Path) -> dict[tuple[str, str], str]:
    """Imports from a lower layer to a higher one: ``{(importer, imported): "file:line"}``."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        me = module_name(path, package)
        for target, line in package_imports(path, package):
            if layer_of(target) > layer_of(me):
                found.setdefault((me, target), f"{path.relative_to(package.parent)}:{line}")
    return found


def test_imports_point_down_only():
    found = upward_imports(ROOT / "emonet_dist")
    new = {edge: where for edge, where in found.items() if edge not in KNOWN_UPWARD}
    assert not new, "upward imports (move the code down, or the import up):\n" + "\n".join(
        f"  {where}: {a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
        for (a, b), where in new.items())
    gone = set(KNOWN_UPWARD) - set(found)
    assert not gone, f"no longer imported upward, remove from KNOWN_UPWARD: {sorted(gone)}"


def test_an_upward_import_is_caught(tmp_path):
    """Negative control: a corpus recipe that imports the training loop is reported with its file and line."""
    pkg = tmp_path / "emonet_dist"
    (pkg / "corpora").mkdir(parents=True)
    (pkg / "train").mkdir()
    for init in (pkg, pkg / "corpora", pkg / "train"):
        (init / "__init__.py").write_text("")
    (pkg / "train" / "loop.py").write_text("")
    (pkg / "corpora" / "recipe.py").write_text("import json\n\n\ndef f():\n    from ..train import loop\n")
    assert upward_imports(pkg) == {("emonet_dist.corpora.recipe", "emonet_dist.train.loop"):
                                   "emonet_dist/corpora/recipe.py:5"}
