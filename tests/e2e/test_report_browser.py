"""The HTML report and the cross-run comparison, opened in a real headless browser (`make test-e2e`).

Chromium comes from the npm registry alone: ``make browser`` installs ``tests/e2e/browser/package.json``
(@sparticuz/chromium, whose package holds the browser binary, and puppeteer-core to drive it) into
``.cache/browser``; ``check_page.cjs`` opens the page, waits for it to load and prints what a reader
sees. Without Node.js, without that install (offline), or with a browser that cannot start here,
the tests skip and say which of these it was. ``COMPRESSLAB_BROWSER_DIR`` points elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from compresslab.report import build_report
from compresslab.report.compare import compare

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
CHECK = Path(__file__).with_name("browser") / "check_page.cjs"
RUNS = REPO / "tests" / "unit" / "report" / "runs"


@pytest.fixture(scope="module")
def browser() -> dict[str, str]:
    """The environment that runs check_page.cjs, or a skip naming what is missing."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("headless browser check skipped: Node.js (node >= 20.11) is not installed")
    root = Path(os.environ.get("COMPRESSLAB_BROWSER_DIR") or REPO / ".cache" / "browser")
    modules = root / "node_modules"
    missing = [p for p in ("@sparticuz/chromium", "puppeteer-core") if not (modules / p).is_dir()]
    if missing:
        pytest.skip(f"headless browser check skipped: {', '.join(missing)} not installed in {modules}; run "
                    "`make browser` (npm install from the npm registry)")
    return {**os.environ, "NODE_PATH": str(modules), "NODE": node}


def open_page(env: dict[str, str], page: Path, shot: Path, width: int) -> dict[str, Any]:
    proc = subprocess.run([env["NODE"], str(CHECK), str(page), str(shot), str(width)], env=env,
                          capture_output=True, text=True, timeout=240)
    if proc.returncode == 3:
        pytest.skip(f"headless browser check skipped: {proc.stderr.strip()[-500:]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_readable(seen: dict[str, Any], n_images: int, title: str) -> None:
    assert seen["errors"] == [], seen["errors"]
    assert seen["title"] == title and seen["h1"] == title
    assert seen["tables"] > 0 and seen["text_length"] > 500
    assert len(seen["images"]) == n_images
    for img in seen["images"]:  # loaded and decoded: a broken image has naturalWidth 0
        assert img["complete"] and img["width"] > 100 and img["height"] > 100, img
    over = seen["overflow"]
    assert over["page"] <= over["viewport"], over  # nothing widens the page: wide tables scroll in their box


@pytest.mark.parametrize("width", [1280, 800])
def test_run_report_renders_with_images(browser: dict[str, str], tmp_path: Path, width: int) -> None:
    run = tmp_path / "outputs" / "obert_int8" / "7aa5f2ac8c4f"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text((RUNS / "obert_int8_smoke.json").read_text())
    written = build_report(run)
    seen = open_page(browser, written["report.html"], tmp_path / f"report-{width}.png", width)
    pngs = [k for k in written if k.endswith(".png")]
    assert_readable(seen, len(pngs), "compresslab: obert_int8 on /home/ada/work/tinybert (sst2)")
    assert (tmp_path / f"report-{width}.png").stat().st_size > 10_000


def test_comparison_renders_with_pareto_plots(browser: dict[str, str], tmp_path: Path) -> None:
    runs = []
    for name in ("obert_int8_smoke", "int8_smoke", "magnitude_int8_busy", "magnitude_int8_failed"):
        m = json.loads((RUNS / f"{name}.json").read_text())
        d = tmp_path / "outputs" / str(m["pipeline"]) / str(m["config_hash"])
        d.mkdir(parents=True)
        (d / "manifest.json").write_text(json.dumps(m))
        runs.append(d)
    written = compare(runs)
    seen = open_page(browser, written["compare.html"], tmp_path / "compare.png", 1280)
    assert_readable(seen, len([k for k in written if k.endswith(".png")]), "compresslab: 4 runs compared")
