"""How well each validation carve stands in for dev: a teacher trained beside the carve, scored on both.

    python benchmarks/val_carve.py                          # sst2, budget quick, carves random and grouped
    python benchmarks/val_carve.py --budget bench --task sst2
    python benchmarks/val_carve.py --budget bench --carves grouped --val-size 500   # a smaller carve: stored
                                                                                    # as grouped_500

Everything that selects (a checkpoint, a lever, the search's candidate) reads the validation split carved
from train (MEASURE.md); dev is the test set. A carve is only useful if a model scores on it about as it
scores on dev. For each carve (``task.val_carve``, :mod:`compresslab.data.carve`) this trains the task's
teacher on that carve's train split (the budget's finetune preset, exactly as a pipeline's finetune step:
cached by content, so a bench teacher is found again), then scores the torch teacher (fp32) on the carve's
validation split and on dev. Writes ``results/val_carve.json[task][budget][carve]``: both scores, the gap in
points and its standard error, the splits' sizes and lengths, the teacher's training wall time (under
whatever else ran: not a speed figure), and the McNemar p of each carve's teacher against the random
carve's on dev (what the carve costs the teacher). No speed is measured.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _results import ResultsFile  # sibling module

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent


def _words(split: list[Any]) -> dict[str, float]:
    n = np.array([len(e.text_a.split()) + (len(e.text_b.split()) if e.text_b else 0) for e in split])
    return {"mean_words": round(float(n.mean()), 2), "share_le_8_words": round(float((n <= 8).mean()), 4)}


def measure(task: str, budget: str, carve: str, work: Path, val_size: int | None = None) -> tuple[dict[str, Any], Any]:
    """Train (or find) the teacher beside ``carve``, score it on validation and dev; (record, dev Scored)."""
    from compresslab.cli import setup_process
    from compresslab.config import compose
    from compresslab.eval.evaluate import predict, torch_forward
    from compresslab.pipeline import teacher_of

    sized = [] if val_size is None else [f"task.val_size={val_size}"]
    cfg = compose(["+pipeline=int8", f"task={task}", f"budget={budget}", f"task.val_carve={carve}", *sized])
    setup_process(cfg.run.get("threads"), int(cfg.seed))
    t0 = time.perf_counter()
    teacher = teacher_of(cfg, work / f"{task}_{budget}_{carve}{'' if val_size is None else val_size}")
    train_s = time.perf_counter() - t0
    forward = torch_forward(teacher.model.eval(), "cpu")
    data = teacher.task
    scores = {name: predict(forward, data.spec, list(split), teacher.tokenizer, max_length=teacher.max_length)
              for name, split in (("validation", data.validation), ("dev", data.dev))}
    metric = data.spec.primary_metric
    val, dev = scores["validation"].metrics[metric], scores["dev"].metrics[metric]
    # the gap's standard error for accuracies (two independent samples); None for other metrics
    se = (math.sqrt(val * (1 - val) / len(data.validation) + dev * (1 - dev) / len(data.dev))
          if metric == "accuracy" else None)
    return {
        "metric": metric, "validation": round(val, 4), "dev": round(dev, 4),
        "gap_pt": round(100 * (val - dev), 2), "gap_se_pt": None if se is None else round(100 * se, 2),
        "sizes": data.info["sizes"],
        "carve": {k: v for k, v in data.info.items() if k.startswith("val_")},
        "validation_text": _words(list(data.validation)), "dev_text": _words(list(data.dev)),
        "train_text": _words(list(data.train)),
        "teacher_wall_s": round(train_s, 1), "finetune_preset": str(cfg.budget.teacher),
    }, scores["dev"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--budget", default="quick")
    ap.add_argument("--carves", nargs="+", default=["random", "grouped"])
    ap.add_argument("--val-size", type=int, help="task.val_size (default: the carve's); stored as <carve>_<N>")
    ap.add_argument("--results", default=str(ROOT / "results" / "val_carve.json"))
    a = ap.parse_args()
    from compresslab.bench.env import hardware_fingerprint, library_versions
    from compresslab.data.carve import check_carve
    from compresslab.data.metrics import mcnemar_pvalue
    from compresslab.manifest import git_sha

    for c in a.carves:
        check_carve(c)  # a bad name fails before any training
    rf = ResultsFile(a.results)
    work = REPO / ".cache" / "val_carve"
    dev: dict[str, Any] = {}
    for carve in a.carves:
        label = carve if a.val_size is None else f"{carve}_{a.val_size}"
        rec, dev[label] = measure(a.task, a.budget, carve, work, a.val_size)
        rf.put([a.task, a.budget, label], rec)
        print(label, {k: rec[k] for k in ("validation", "dev", "gap_pt", "gap_se_pt")}, flush=True)
    ref = dev.get("random")  # what each other carve costs the teacher on dev, paired on the same sentences
    for label, scored in dev.items():
        if ref is not None and label != "random":
            p = round(float(mcnemar_pvalue(scored.predictions == scored.labels, ref.predictions == ref.labels)), 4)
            rf.put([a.task, a.budget, label, "dev_mcnemar_p_vs_random"], p)
            print(label, "dev McNemar p vs random", p, flush=True)
    rf.put(["meta"], {"git_sha": git_sha(), "versions": library_versions(), "hardware": hardware_fingerprint(),
                      "command": "python benchmarks/val_carve.py " + " ".join(sys.argv[1:]),
                      "scored": "the torch teacher (fp32), trained on the carve's train split; seed from the config"})


if __name__ == "__main__":
    main()
