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
    ("foundation", ["emonet_dist", "emonet_dist.atomic", "emonet_dist.errors", "emonet_dist.typed", "emonet_dist.names",
                    "emonet_dist.limits", "emonet_dist.config", "emonet_dist.progress", "emonet_dist.pool",
                    "emonet_dist.log", "emonet_dist.audio",
                    # numpy-only scores: what the training loop reports, the baselines score and evaluation files
                    # hold; below all three, so that none of them depends on another for it
                    "emonet_dist.metrics"]),
    ("corpora", ["emonet_dist.corpora"]),
    ("data", ["emonet_dist.data"]),
    ("model", ["emonet_dist.model"]),
    # the MLflow client: URIs, experiments, metric keys, journal logging; its calls to a server bounded in time
    # (tracking_http) and sent off the training path (tracking_sender), below it so that bundles can reuse them
    ("tracking", ["emonet_dist.tracking", "emonet_dist.tracking_http", "emonet_dist.tracking_sender"]),
    ("bundles", ["emonet_dist.bundles"]),
    # one run's directory, run.json, MLflow run, inputs and prediction files: what every kind of run above uses,
    # knowing nothing of how a run trains or scores
    ("runs", ["emonet_dist.runs"]),
    ("train", ["emonet_dist.train"]),
    # scores finished runs: reads training's streams and predicts with training's predict; train never imports it
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
            out += from_import_targets(node, here, package)
        elif isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
    return [(m, line) for m, line in out if m == name or m.startswith(name + ".")]


def from_import_targets(node: ast.ImportFrom, here: str, package: Path) -> list[tuple[str, int]]:
    """``(module, line)`` per name of one ``from ... import``: ``from pkg import module`` imports that module, any
    other name comes from ``pkg``. ``here``: the package the importing file is in."""
    if node.level:
        base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
        mod = ".".join(base + ([node.module] if node.module else []))
    else:
        mod = node.module or ""
    out = []
    for alias in node.names:
        sub = package.parent / f"{mod}.{alias.name}".replace(".", "/")
        out.append((f"{mod}.{alias.name}" if sub.with_suffix(".py").is_file() or sub.is_dir() else mod, node.lineno))
    return out


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


def private_imports(package: Path) -> dict[str, str]:
    """Uses of another module's private names: ``from emonet_dist.x import _y`` or ``x._y`` on an imported package
    module. ``{"importer -> module._name": "file:line"}``."""
    found: dict[str, str] = {}
    for path in sorted(package.rglob("*.py")):
        me = module_name(path, package)
        here = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
        where = str(path.relative_to(package.parent))
        tree = ast.parse(path.read_text(), str(path))
        modules = {}  # local name -> the package module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                for (target, line), alias in zip(from_import_targets(node, here, package), node.names):
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.setdefault(f"{me} -> {target}.{alias.name}", f"{where}:{line}")
                    if target.endswith("." + alias.name):
                        modules[alias.asname or alias.name] = target
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.setdefault(f"{me} -> {modules[node.value.id]}.{node.attr}", f"{where}:{node.lineno}")
    return found


def test_no_module_uses_another_modules_private_names():
    found = {k: v for k, v in private_imports(ROOT / "emonet_dist").items()
             if k.split(" -> ")[1].startswith("emonet_dist")}
    assert not found, "private names used across modules (make them public or move the code):\n" + "\n".join(
        f"  {where}: {edge}" for edge, where in found.items())


def test_a_private_import_is_caught(tmp_path):
    """Negative control: ``tracking._quiet`` used from another module, and ``from ..x import _y``, are reported
    with their file and line."""
    pkg = tmp_path / "emonet_dist"
    (pkg / "train").mkdir(parents=True)
    for init in (pkg, pkg / "train"):
        (init / "__init__.py").write_text("")
    (pkg / "tracking.py").write_text("def _quiet(fn):\n    return fn()\n")
    (pkg / "train" / "launch.py").write_text("from .. import tracking\n\n\ndef f():\n    return tracking._quiet(f)\n")
    (pkg / "train" / "outputs.py").write_text("import json\nfrom .launch import _write_run_json\n")
    assert private_imports(pkg) == {
        "emonet_dist.train.launch -> emonet_dist.tracking._quiet": "emonet_dist/train/launch.py:5",
        "emonet_dist.train.outputs -> emonet_dist.train.launch._write_run_json": "emonet_dist/train/outputs.py:2"}
