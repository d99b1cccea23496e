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

from compresslab.bench.machine_load import LoadMeter
from compresslab.cli import setup_process
from compresslab.config import compose
from compresslab.pipeline import teacher_of


def main(overrides: list[str]) -> None:
    logging.basicConfig(level=logging.INFO)
    cfg = compose(["+pipeline=int8", *overrides])
    setup_process(cfg.run.get("threads"), int(cfg.seed))
    meter = LoadMeter()  # a wall time stretched by other work says so (no results file here to stamp it)
    t0 = time.perf_counter()
    teacher = teacher_of(cfg, Path(cfg.paths.cache_dir) / "tmp")
    params = sum(p.numel() for p in teacher.model.parameters())
    print(json.dumps({"wall_s": round(time.perf_counter() - t0, 1), "params": params,
                      "machine_load": meter.lap(min_s=0.0)}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
