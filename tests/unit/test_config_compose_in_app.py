"""``config.compose`` inside a running Hydra app (the CLI's, when the search composes candidates; a user's
``@hydra.main`` calling ``compresslab.run``): Hydra's global state is set aside and put back, where
``initialize_config_dir`` alone refuses with "GlobalHydra is already initialized"."""

from __future__ import annotations

from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from compresslab.config import compose, config_dir


def test_compose_works_inside_an_initialized_hydra_and_restores_it() -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3", job_name="users_app"):
        app = GlobalHydra.instance().hydra
        assert app is not None
        cfg = compose(["+pipeline=int8", "task=mrpc"])
        assert cfg.pipeline.name == "int8" and cfg.task.name == "mrpc"
        assert compose(["+pipeline=ziplm_int8"]).pipeline.name == "ziplm_int8"  # twice: still restored
        assert GlobalHydra.instance().is_initialized() and GlobalHydra.instance().hydra is app
    assert not GlobalHydra.instance().is_initialized()


def test_compose_outside_any_app_leaves_hydra_uninitialized() -> None:
    GlobalHydra.instance().clear()
    assert compose(["+pipeline=int8"]).pipeline.name == "int8"
    assert not GlobalHydra.instance().is_initialized()
