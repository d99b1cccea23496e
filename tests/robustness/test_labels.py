"""Issue #12, kind 5: what is deployed must work without our manifest.

A saved step, the ONNX export and the deployed dir are read by tools that know nothing of
compresslab: optimum's ``ORTModelForSequenceClassification`` reads ``config.json`` with
``AutoConfig`` and prints ``config.id2label[argmax]``. optimum is not installed here, so the test
loads the export dir the way it does (``AutoConfig`` + ``AutoTokenizer`` + an onnxruntime session on
``model.onnx``) and checks that the predicted name is the data's, in the data's order.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from compresslab.data.tasks import load_task

POS = ["good", "great", "fun", "love"]
NEG = ["bad", "awful", "boring", "hate"]
FILL = ["the", "movie", "film", "plot", "is", "was", "very"]


def _tiny_model_dir(path: Path) -> Path:
    """A tiny random BERT classifier (with transformers' LABEL_0/1 names) and its tokenizer, saved."""
    from compresslab.models.tiny import tiny_model, tiny_tokenizer

    tiny_model("bert", num_labels=2).save_pretrained(path)
    tiny_tokenizer(path / "tok").save_pretrained(path)
    return path


def _sentiment_csv(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    lines = ["review,sentiment"]
    for _ in range(n):
        pos = rng.random() < 0.5
        words = rng.choices(FILL, k=4) + [rng.choice(POS if pos else NEG)]
        lines.append(f"{' '.join(words)},{'positive' if pos else 'negative'}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _load_like_optimum(model_dir: Path, text: str) -> str:
    """What ``ORTModelForSequenceClassification.from_pretrained(dir)`` + a pipeline print for ``text``."""
    import onnxruntime as ort
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    enc = tokenizer([text], return_tensors="np")
    logits = session.run(None, {k: v.astype(np.int64) for k, v in enc.items() if k in wanted})[0]
    return config.id2label[int(np.argmax(logits[0]))]


@pytest.fixture(scope="module")
def string_label_run(tmp_path_factory):
    """The int8 pipeline (smoke budget) on a tiny model and a CSV whose labels are names, given in a
    non-sorted order (positive first) so that a name in the wrong order would show."""
    from compresslab.config import compose
    from compresslab.pipeline import run

    tmp = tmp_path_factory.mktemp("labels_run")
    model = _tiny_model_dir(tmp / "model")
    train, dev = _sentiment_csv(tmp / "train.csv", 160, 0), _sentiment_csv(tmp / "dev.csv", 32, 1)
    cfg = compose(["+pipeline=int8", "debug=smoke", "model=local", f"model.source={model}", "task=generic",
                   f"task.generic.train={train}", f"task.generic.dev={dev}", "task.generic.text_a=review",
                   "task.generic.label=sentiment", "task.generic.labels=[positive,negative]", "bench.enabled=false",
                   "report=false", "run.threads=1", "task.max_length=32", f"paths.output_dir={tmp}/out",
                   f"paths.cache_dir={tmp}/cache"])
    return run(cfg)


@pytest.mark.case(name="string-labelled CSV: config.json of every saved step and export dir", kind=5, bad_input=False,
                  expected="id2label {0: 'positive', 1: 'negative'} (the labels order) in every config.json")
def test_every_config_json_names_the_classes(string_label_run, observe):
    from transformers import AutoConfig

    dirs = sorted(p.parent for p in Path(string_label_run).rglob("config.json") if ".hydra" not in p.parts)
    assert any((d / "model.onnx").is_file() for d in dirs) and any((d / "model.safetensors").is_file() for d in dirs)
    found = {str(d.relative_to(string_label_run)): AutoConfig.from_pretrained(d, local_files_only=True).id2label
             for d in dirs}
    assert all(v == {0: "positive", 1: "negative"} for v in found.values()), found
    observe(f"{len(found)} dirs ({', '.join(found)}): id2label {{0: 'positive', 1: 'negative'}}")


@pytest.mark.case(name="export dir loaded as optimum's ORTModelForSequenceClassification does", kind=5,
                  bad_input=False, expected="AutoConfig + onnxruntime on model.onnx predicts a real class name, "
                                            "the same one the torch step predicts")
def test_export_dir_loaded_as_optimum_does(string_label_run, observe):
    import torch

    from compresslab.checkpoint import load
    from compresslab.models.loading import load_tokenizer

    run_dir = Path(string_label_run)
    onnx_dirs = sorted(p.parent for p in run_dir.rglob("model.onnx") if (p.parent / "config.json").is_file())
    assert onnx_dirs
    step = next(p.parent for p in run_dir.rglob("model.safetensors"))
    model, tok = load(step).eval(), load_tokenizer(step)
    text = "the film was very great fun"
    with torch.no_grad():
        want = model.config.id2label[int(model(**tok([text], return_tensors="pt")).logits.argmax(-1))]
    printed = {str(d.relative_to(run_dir)): _load_like_optimum(d, text) for d in onnx_dirs}
    assert want in ("positive", "negative")
    assert printed[str(onnx_dirs[0].relative_to(run_dir))] == want  # the fp32 export predicts what torch predicts
    assert set(printed.values()) <= {"positive", "negative"}, printed
    observe(f"torch step predicts {want!r}; as optimum loads them: {printed}")


def _glue_root(root: Path, task_dir: str, header: str, rows: list[str]) -> Path:
    d = root / "glue" / task_dir
    d.mkdir(parents=True)
    for split in ("train", "dev"):
        (d / f"{split}.tsv").write_text(header + "\n" + "\n".join(rows * 12) + "\n", encoding="utf-8")
    return root


@pytest.mark.case(name="GLUE tasks name their classes in config.json", kind=5, bad_input=False,
                  expected="SST-2 negative/positive, RTE entailment/not_entailment, in the reader's label order")
@pytest.mark.parametrize(("task", "task_dir", "header", "rows", "names"), [
    ("sst2", "SST-2", "sentence\tlabel", ["a good film\t1", "a bad film\t0"], {0: "negative", 1: "positive"}),
    ("rte", "RTE", "index\tsentence1\tsentence2\tlabel",
     ["0\ta man runs\ta person runs\tentailment", "1\ta man runs\ta cat sleeps\tnot_entailment"],
     {0: "entailment", 1: "not_entailment"}),
])
def test_glue_names_on_the_input_model(tmp_path, observe, task, task_dir, header, rows, names):
    from compresslab.config import compose
    from compresslab.pipeline import build_steps
    from compresslab.pipeline.state import RunState

    root = _glue_root(tmp_path / "data", task_dir, header, rows)
    model = _tiny_model_dir(tmp_path / "model")
    cfg = compose(["+pipeline=int8", "debug=smoke", "model=local", f"model.source={model}", f"task={task}",
                   f"data.root={root}", "task.max_length=32", "task.val_size=4", f"paths.output_dir={tmp_path}/out"])
    state = RunState.prepare(cfg, build_steps(cfg))
    state.load_initial()
    data = load_task(task, root)
    assert [data.spec.label_names.index(names[e.label]) for e in data.dev[:2]] == [e.label for e in data.dev[:2]]
    assert state.model.config.id2label == names and state.model.config.label2id == {v: k for k, v in names.items()}
    assert state.teacher_or_initial().config.id2label == names
    observe(f"{task}: id2label {state.model.config.id2label}")


@pytest.mark.case(name="integer-labelled CSV: names are the ids as written", kind=5, bad_input=False,
                  expected="id2label {0: '0', 1: '1'}, not LABEL_0/LABEL_1; with labels=[1,2] id 0 is named '1'")
def test_integer_labels_named_as_written(tmp_path, observe):
    from compresslab.config import compose
    from compresslab.pipeline import build_steps
    from compresslab.pipeline.state import RunState

    path = tmp_path / "d.csv"
    path.write_text("text,label\na good film,2\na bad film,1\ngreat,2\nawful,1\n", encoding="utf-8")
    model = _tiny_model_dir(tmp_path / "model")
    cfg = compose(["+pipeline=int8", "debug=smoke", "model=local", f"model.source={model}", "task=generic",
                   f"task.generic.train={path}", f"task.generic.dev={path}", "task.generic.labels=[1,2]",
                   "task.max_length=32", "task.val_size=0", f"paths.output_dir={tmp_path}/out"])
    state = RunState.prepare(cfg, build_steps(cfg))
    state.load_initial()
    assert state.model.config.id2label == {0: "1", 1: "2"} and state.task.dev[0].label == 1
    observe(f"id2label {state.model.config.id2label}")
