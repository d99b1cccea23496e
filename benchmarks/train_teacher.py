"""Train (or find cached) the teacher for a budget, exactly as the pipeline's finetune step would.

    python benchmarks/train_teacher.py budget=bench [task=sst2]

Useful to fill the teacher cache once, in the background, before running several pipelines.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from compresslab.config import compose, setup_process
from compresslab.passes.finetune import Finetune
from compresslab.runtime import RunState


def main(overrides: list[str]) -> None:
    logging.basicConfig(level=logging.INFO)
    cfg = compose(["+pipeline=int8", *overrides])
    setup_process(cfg.run.get("threads"), int(cfg.seed))
    from hydra.utils import instantiate

    ft: Finetune = instantiate(cfg.pipeline.passes.finetune)
    state = RunState.prepare(cfg, [])
    state.load_initial()
    tmp = Path(cfg.paths.cache_dir) / "tmp"
    ctx = state.context(tmp, tmp)
    t0 = time.perf_counter()
    res = ft.apply(state.model, ctx)
    print(json.dumps({"wall_s": round(time.perf_counter() - t0, 1), **res.metrics}, indent=2, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
