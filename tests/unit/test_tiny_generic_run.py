"""compresslab.testing.tiny_generic_run(root, pipeline) composes with every shipped pipeline (its obert override
only where the pipeline has an obert step)."""

from compresslab.config import available_pipelines, compose
from compresslab.testing import tiny_generic_run


def test_the_tiny_run_overrides_compose_with_every_shipped_pipeline(tmp_path):
    refused = {}
    for name in available_pipelines():
        try:
            compose([f"+pipeline={name}", *tiny_generic_run(tmp_path, name)])
        except Exception as e:  # noqa: BLE001 - collected, all named at once
            refused[name] = str(e)[:200]
    assert not refused
