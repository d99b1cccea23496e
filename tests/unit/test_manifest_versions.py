"""A run's manifest records the version of every library its figures can depend on (the standards: every run
records config, versions, seed and hardware), the optional runtimes included where they are installed."""

from __future__ import annotations

import importlib.metadata

import pytest

from compresslab.manifest import RUN_LIBRARIES, library_versions


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@pytest.mark.parametrize("lib", ["torch", "onnxruntime", "transformers", "openvino", "nncf", "deepsparse"])
def test_every_installed_run_library_is_recorded_with_its_version(lib) -> None:
    assert lib in RUN_LIBRARIES
    assert library_versions().get(lib) == _installed(lib)  # absent (None) exactly when not installed


def test_openvino_and_nncf_are_recorded_here() -> None:
    # `make install-test` brings both (the openvino extra): a deploy=openvino run's manifest must name them
    v = library_versions()
    assert v["openvino"] == _installed("openvino") and v["nncf"] == _installed("nncf")
    assert v["python"]


def test_one_reader_for_the_manifest_and_the_hardware_fingerprint(monkeypatch) -> None:
    """The two records of a run (``versions``, ``hardware.libraries``) come from one reader, so they cannot
    disagree: on a GPU install (the ``onnxruntime-gpu`` distribution) both name ONNX Runtime's version."""
    import compresslab.bench.env as env

    real = importlib.metadata.version

    def gpu_wheel(name: str) -> str:
        if name == "onnxruntime":
            raise importlib.metadata.PackageNotFoundError(name)
        return "1.99.0" if name == "onnxruntime-gpu" else real(name)

    monkeypatch.setattr(importlib.metadata, "version", gpu_wheel)
    assert library_versions()["onnxruntime"] == "1.99.0" == env.library_versions()["onnxruntime"]
    assert env.library_versions(("no-such-dist-xyz",)) == {"no-such-dist-xyz": None}  # a fingerprint keeps its keys
    assert "no-such-dist-xyz" not in library_versions()
