"""notebooks/quickstart.ipynb runs top to bottom on the smoke config."""

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
NB = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_executes(tmp_path, data_root, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("COMPRESSLAB_DATA", str(data_root))
    monkeypatch.setenv("COMPRESSLAB_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NB, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("speedup vs ort_fp32" in o.get("text", "") for o in outputs)
    assert any("compress: eval_data accuracy" in o.get("text", "") for o in outputs)  # the in-process API
    assert any("int8 speedup vs torch fp32" in o.get("text", "") for o in outputs)
