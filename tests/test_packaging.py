"""The built wheel carries everything the package reads at run time: the demo's config and every data file.

`emonet demo` used to read ``jobs/demo.yaml`` from the checkout, so it failed after a normal (non-editable)
``pip install .``; the config now lives in ``emonet_dist/specs/`` and this test builds the wheel to prove it ships.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest

from emonet_testkit import ROOT

pytestmark = pytest.mark.slow


def _data_files() -> set[str]:
    """Every file under emonet_dist/ that is not Python source or a bytecode cache."""
    pkg = ROOT / "emonet_dist"
    return {str(p.relative_to(ROOT)) for p in pkg.rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}


def test_wheel_ships_the_demo_config_and_every_data_file(tmp_path):
    src = tmp_path / "src"  # a copy: an in-tree build would leave build/ and *.egg-info in the checkout
    shutil.copytree(ROOT / "emonet_dist", src / "emonet_dist", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir",
                          str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("emonet_dist-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = _data_files()
    assert {"emonet_dist/specs/demo.yaml", "emonet_dist/specs/demo_job.yaml", "emonet_dist/corpora/av_map.csv"} <= data
    assert not data - names, sorted(data - names)
    assert "emonet_dist/demo.py" in names and not any(n.startswith(("tests/", "jobs/")) for n in names)
