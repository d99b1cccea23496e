"""The built wheel works on its own: installed (not editable) and run from outside the repo.

Nothing is downloaded: the wheel is built with this venv's setuptools (no build isolation, no
index), installed without dependencies into a fresh venv without pip, and that venv finds the
dependencies (torch, transformers, the embedded model...) through a `.pth` line pointing at this
venv's site-packages. A path added by a `.pth` line does not run that directory's own `.pth`
files, so this venv's editable-install hook stays off and the wheel's copy is what gets imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]


def _sh(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


def _build_wheel(tmp: Path) -> Path:
    """Build from a copy of the sources, so no build/ or egg-info lands in the checkout."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "compresslab", src / "compresslab",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp / "wheels"
    _sh([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         str(src), "-w", str(out)], cwd=tmp)
    (whl,) = out.glob("compresslab-*.whl")
    return whl


def test_wheel_installs_and_runs_a_pipeline_outside_the_repo(tmp_path, data_root):
    whl = _build_wheel(tmp_path)
    with zipfile.ZipFile(whl) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    shipped = {p.relative_to(REPO).as_posix() for p in (REPO / "compresslab" / "conf").rglob("*.yaml")}
    assert shipped and shipped <= names, sorted(shipped - names)  # every config group, at every depth
    torch_req = [ln for ln in meta.splitlines() if ln.startswith("Requires-Dist: torch")]
    assert torch_req and "==" not in torch_req[0], torch_req  # a range: users keep their own torch

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    _sh([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index", str(whl)],
        cwd=tmp_path)
    site = Path(_sh([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path).strip())
    (site / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    where = _sh([str(py), "-c", "import compresslab; print(compresslab.__file__)"], cwd=cwd, env=env).strip()
    assert Path(where).is_relative_to(env_dir) and not Path(where).is_relative_to(REPO), where

    out = tmp_path / "outputs"
    _sh([str(py), "-m", "compresslab", "+pipeline=int8", "debug=smoke", f"data.root={data_root}", "run.threads=1",
         "bench.enabled=false", f"paths.output_dir={out}", f"paths.cache_dir={tmp_path / 'cache'}"],
        cwd=cwd, env=env, timeout=480)
    (manifest,) = out.glob("int8/*/manifest.json")
    m = json.loads(manifest.read_text())
    assert m["status"] == "finished" and all(s["status"] == "done" for s in m["steps"])
    assert (manifest.parent / "report.md").is_file() and m["eval"]["models"]["deployed"]["score"] > 0
    assert not list(cwd.iterdir()), sorted(p.name for p in cwd.iterdir())  # nothing written to the cwd
