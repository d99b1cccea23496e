"""Issue #12 kind 4, every timing site: each figure timed records how busy the machine was.

The bench stage and the latency table were covered first (``test_load.py``); the same fault lived
wherever else something is timed: ``deploy=auto`` (ORT vs OpenVINO), guided int8's cost model and
check, and the benchmark scripts' results JSON. Here each site is run on a fake busy (or quiet)
machine (:class:`~compresslab.testing.FakeCpu`, a private lock directory), and two guards read the
sources so a new site cannot forget it: every benchmark writes through ``benchmarks/_results.py``
(which stamps ``meta.machine_load`` on every write), and every package module that times records
``machine_load``.
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import re
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

import compresslab.bench.machine_load as ml
from compresslab.bench.latency import measure_latency
from compresslab.testing import FakeCpu

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
VOCAB = 64  # compresslab.models.tiny's vocabulary: timing inputs draw ids below it
SHAPE = (2, 16)  # guided int8's timing shape for the tiny model (72 positions: b32xs128 does not fit)


def _results_module() -> ModuleType:
    """``benchmarks/_results.py``, loaded by path (the benchmarks folder is not a package on sys.path)."""
    spec = importlib.util.spec_from_file_location("benchmarks_results_under_test", BENCHMARKS / "_results.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _Runner:
    """A runner that does nothing (what is timed does not matter here); OpenVINO's precision attribute."""

    compiled_precision = "f32"

    def __init__(self, *a: Any, **k: Any) -> None:
        pass

    def run(self, batch: dict) -> None:
        pass


# --------------------------------------------------------------------------------- deploy=auto
def _deploy_state(tmp_path: Path) -> SimpleNamespace:
    """A run state with just what the deploy stage reads, and the files it stats (whichever runtime wins)."""
    onnx = tmp_path / "export" / "model.onnx"
    (tmp_path / "export" / "openvino").mkdir(parents=True, exist_ok=True)
    for f in (onnx, tmp_path / "export" / "openvino" / "openvino_model.xml",
              tmp_path / "export" / "openvino" / "openvino_model.bin"):
        f.write_bytes(b"graph")
    settings = SimpleNamespace(deploy=SimpleNamespace(runtime="auto", tolerance=0.005, precision="f32"),
                               bench=SimpleNamespace(warmup=0, runs=2, min_time_s=0.0, seed=0, max_runs=None),
                               max_length=16)
    return SimpleNamespace(settings=settings, model=SimpleNamespace(config=SimpleNamespace(vocab_size=100)),
                           onnx=SimpleNamespace(onnx_path=onnx))


class _Validation:
    examples, key = [object()], "agreement"

    def __init__(self, state: Any = None) -> None:
        pass

    @classmethod
    def of_run(cls, state: Any) -> "_Validation":
        return cls(state)

    def score(self, forwards: dict[str, Any]) -> dict[str, dict[str, float]]:
        return {k: {"agreement": 1.0} for k in forwards}


def _deploy_auto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, other: float) -> dict[str, Any]:
    """The deploy stage with deploy.runtime=auto on fakes (no ONNX, no OpenVINO): the manifest's data."""
    import compresslab.bench
    import compresslab.bench.openvino_runner
    import compresslab.eval.evaluate
    import compresslab.eval.onnx_runner
    import compresslab.pipeline.deploy as dep
    from compresslab.manifest import RunManifest

    monkeypatch.setattr(ml, "read_cpu", FakeCpu(other=other))
    monkeypatch.setattr(compresslab.bench, "OrtRunner", _Runner)
    monkeypatch.setattr(compresslab.bench.openvino_runner, "OpenVinoRunner", _Runner)
    monkeypatch.setattr(compresslab.eval.onnx_runner, "OnnxRunner", _Runner)
    monkeypatch.setattr(compresslab.eval.evaluate, "onnx_forward", lambda runner: runner)
    monkeypatch.setattr(dep, "ValidationAgreement", _Validation)
    monkeypatch.setattr(dep, "_precision_of", lambda path: "fp32")
    monkeypatch.setattr(dep, "openvino_ir", lambda *a, **k: {"path": "export/openvino/openvino_model.xml", "notes": [],
                                                             "compiled_precision": {"f32": "f32"}, "int8": False,
                                                             "source": "export/model_unfused.onnx"})
    manifest = RunManifest.create(tmp_path)
    dep.deploy(_deploy_state(tmp_path), tmp_path, manifest, 1)
    return manifest.data


@pytest.mark.case(name="deploy=auto timed ORT vs OpenVINO on a busy machine", kind=4, bad_input=False,
                  expected="deploy.auto.machine_load (busy, reasons naming deploy=auto), a MACHINE BUSY note naming "
                           "deploy.runtime=ort|openvino, a warning; on a quiet machine busy=false and no note")
def test_deploy_auto_records_machine_load(locks, tmp_path, monkeypatch, caplog, observe) -> None:
    with caplog.at_level(logging.WARNING, logger="compresslab"):
        data = _deploy_auto(tmp_path / "busy", monkeypatch, other=1.0)
    auto = data["deploy"]["auto"]
    load = auto["machine_load"]
    assert auto["busy"] is True and load["busy"] and load["what"] == "deploy=auto: ORT vs OpenVINO"
    assert load["during"]["measurements"] == 1 and load["reasons"]
    note = next(n for n in data["deploy"]["notes"] if "MACHINE BUSY" in n)
    assert "deploy.runtime=ort" in note and "deploy.runtime=openvino" in note
    assert "MACHINE BUSY while timing (deploy=auto" in caplog.text and "void timings" in caplog.text
    quiet = _deploy_auto(tmp_path / "quiet", monkeypatch, other=0.0)
    assert quiet["deploy"]["auto"]["busy"] is False and not quiet["deploy"]["auto"]["machine_load"]["busy"]
    assert not any("MACHINE BUSY" in n for n in quiet["deploy"]["notes"])
    observe(f"busy: deploy.auto.busy=true, note {note[:160]!r}; quiet: busy=false, no note")


# --------------------------------------------------------------------------------- guided int8
@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory, tiny_tok) -> tuple[Path, list[dict]]:
    """A fused export of the tiny BERT and validation feeds for it."""
    from compresslab.data.loaders import make_loader
    from compresslab.export import export_model
    from compresslab.models.tiny import tiny_model
    from compresslab.testing import tiny_sentiment

    batches = list(make_loader(tiny_sentiment(8), tiny_tok, 4, 32))
    exported = export_model(tiny_model("bert"), tiny_tok, tmp_path_factory.mktemp("timing") / "bert", batches,
                            threads=1)
    feeds = [{k: v.numpy() for k, v in b.items() if k != "labels"}
             for b in make_loader(tiny_sentiment(16, seed=3), tiny_tok, 16, 32)]
    return Path(exported.onnx_path), feeds


@pytest.mark.case(name="guided int8 timed its candidates on a busy machine", kind=4, bad_input=False,
                  expected="every timing in a window named guided int8; latency.machine_load combines them (busy, "
                           "reasons, windows) with a warning that the fp32 set rests on void timings")
def test_guided_int8_records_machine_load(locks, tiny_onnx, tmp_path, monkeypatch, caplog, observe) -> None:
    import compresslab.quant.guided_int8 as g

    src, feeds = tiny_onnx
    real = g.time_models
    table = {"fp32": 2.0, "int8": 1.0, "chosen": 1.05}  # a fixed latency table: the decision stays put

    def timed(paths: dict, *a: Any, **k: Any) -> dict[str, float]:
        real(paths, *a, **k)  # the real timing (tiny graphs, 1 run), its record into k["loads"]
        return {n: table[n] for n in paths}

    monkeypatch.setattr(g, "time_models", timed)
    monkeypatch.setattr(g, "LATENCY_SHAPE", SHAPE)
    monkeypatch.setattr(ml, "read_cpu", FakeCpu(other=1.0))
    with caplog.at_level(logging.WARNING, logger="compresslab"):
        rec = g.guided_int8(src, tmp_path / "g.onnx", feeds[:1], sensitivity="single_fp32", threads=1, latency_runs=1,
                            vocab_size=VOCAB, max_rounds=1)
    load = rec["latency"]["machine_load"]
    assert rec["latency"]["busy"] and load["busy"] and load["windows"] == 2 and load["busy_windows"] == 2
    assert all(r.startswith("guided int8: fp32 / int8 candidates: ") for r in load["reasons"])
    assert "fp32 set was chosen on timings taken on a busy machine" in caplog.text
    observe(f"latency.machine_load: busy, {load['windows']} windows, {load['reasons'][0][:120]}")


def test_guided_int8_quiet_timing_is_not_busy(locks, tiny_onnx, monkeypatch) -> None:
    import compresslab.quant.guided_int8 as g

    monkeypatch.setattr(g, "LATENCY_SHAPE", SHAPE)
    src, _ = tiny_onnx
    loads: list[dict] = []
    t = g.time_models({"fp32": src, "int8": src}, 1, 1, VOCAB, loads=loads)
    assert set(t) == {"fp32", "int8"} and len(loads) == 1 and not loads[0]["busy"]
    assert not ml.combine(loads)["busy"] and ml.combine([])["windows"] == 0


# --------------------------------------------------------------------------------- benchmark results files
def _fake_timing(what: str = "speed") -> dict:
    runner = _Runner()
    with ml.timing_window(f"test benchmark: {what}"):
        return measure_latency({"ort_fp32": runner, "model": runner}, [(1, 8)], warmup=0, runs=2)


@pytest.mark.case(name="a benchmark script times on a busy machine", kind=4, bad_input=False,
                  expected="its results JSON says so without the script asking: meta.machine_load.busy, the timing "
                           "window tagged with the item it produced, busy_items naming it and why")
def test_benchmark_results_are_stamped_busy(locks, tmp_path, monkeypatch, observe) -> None:
    R = _results_module()
    meter_cpu = FakeCpu(other=0.0, step_s=5.0)
    results = R.ResultsFile(tmp_path / "topic.json", meter=ml.LoadMeter(reader=meter_cpu))
    lat = _fake_timing()  # quiet
    results.put(["speed"], {k: v["b1xs8"]["p50_ms"] for k, v in lat["results"].items()})
    quiet = results.load()["meta"]["machine_load"]
    assert quiet["busy"] is False and [t["item"] for t in quiet["timings"]] == ["speed"]
    monkeypatch.setattr(ml, "read_cpu", FakeCpu(other=1.0))  # another process keeps a core busy
    _fake_timing("b32")
    results.put(["speed_b32"], 1.0)
    load = results.load()["meta"]["machine_load"]
    assert load["busy"] and list(load["busy_items"]) == ["speed_b32"]
    assert [t["item"] for t in load["timings"]] == ["speed", "speed_b32"]  # the quiet one is kept
    assert "test benchmark: b32" in load["busy_items"]["speed_b32"][0]
    observe(f"meta.machine_load.busy=true, busy_items {dict(load['busy_items'])}"[:400])


@pytest.mark.case(name="a wall time (training, a pass) measured beside another process", kind=4, bad_input=False,
                  expected="meta.machine_load.intervals[item]: other processes' CPU s per s since the previous "
                           "write, busy over the threshold; laps under a second are not judged")
def test_benchmark_wall_time_interval_is_stamped(locks, tmp_path, observe) -> None:
    R = _results_module()
    cpu = FakeCpu(other=1.2, step_s=30.0)  # 30 s between readings: a training item
    results = R.ResultsFile(tmp_path / "topic.json", meter=ml.LoadMeter(reader=cpu))
    results.put(["train_s"], 30.0)
    lap = results.load()["meta"]["machine_load"]["intervals"]["train_s"]
    assert lap["busy"] and lap["other_cpu"] == pytest.approx(1.2) and lap["wall_s"] == pytest.approx(30.0)
    cpu.step_s = 0.01  # the next write follows at once: too short to judge, no interval recorded
    results.put(["note"], "x")
    load = results.load()["meta"]["machine_load"]
    assert "note" not in load["intervals"] and list(load["busy_items"]) == ["train_s"]
    observe(f"intervals.train_s={lap['other_cpu']} CPU s/s over {lap['wall_s']} s: busy; a 10 ms lap not judged")


@pytest.mark.case(name="a resumed benchmark replaces its meta or rewrites the whole file", kind=4, bad_input=False,
                  expected="machine_load entries from earlier writes and processes are kept (a busy figure stays "
                           "flagged until the file is made afresh)")
def test_benchmark_stamp_survives_meta_and_whole_writes(locks, tmp_path, monkeypatch, observe) -> None:
    R = _results_module()
    path = tmp_path / "topic.json"
    monkeypatch.setattr(ml, "read_cpu", FakeCpu(other=1.0))
    first = R.ResultsFile(path, meter=ml.LoadMeter(reader=FakeCpu(step_s=0.0)))
    _fake_timing()
    first.put(["speed"], 1.0)
    monkeypatch.setattr(ml, "read_cpu", FakeCpu(other=0.0))
    second = R.ResultsFile(path, meter=ml.LoadMeter(reader=FakeCpu(step_s=0.0)))  # a later process, say
    second.put(["meta"], {"git_sha": "abc"})  # what every script does last
    data = second.load()
    assert data["meta"]["git_sha"] == "abc" and data["meta"]["machine_load"]["busy_items"] == \
        first.load()["meta"]["machine_load"]["busy_items"] != {}
    whole = {k: v for k, v in data.items() if k != "meta"} | {"meta": {"git_sha": "def"}}
    second.write(whole)  # a script that builds its file itself
    again = second.load()["meta"]
    assert again["git_sha"] == "def" and again["machine_load"]["busy"] and len(again["machine_load"]["timings"]) == 1
    observe(f"after meta replaced and a whole-file write: busy_items {list(again['machine_load']['busy_items'])}")


@pytest.mark.case(name="figures copied from a run's manifest that was timed busy", kind=4, bad_input=False,
                  expected="note_run records every machine_load of the manifest (bench, deploy=auto, ...) under "
                           "meta.machine_load.runs; busy_items names the run")
def test_benchmark_copied_run_figures_keep_their_load(locks, tmp_path, observe) -> None:
    R = _results_module()
    results = R.ResultsFile(tmp_path / "topic.json", meter=ml.LoadMeter(reader=FakeCpu(step_s=0.0)))
    busy = {"busy": True, "what": "bench stage", "reasons": ["other processes used 1.00 CPU s per s while timing"]}
    manifest = {"config_hash": "abc123", "bench": {"machine_load": busy, "speedups": {"deployed": {"b32xs128": 2.4}}},
                "deploy": {"auto": {"machine_load": {"busy": False, "what": "deploy=auto: ORT vs OpenVINO",
                                                     "reasons": []}}}}
    rec = results.note_run("int8", manifest)
    results.put(["int8_speedup"], 2.4)
    load = results.load()["meta"]["machine_load"]
    assert rec["windows"] == 2 and load["runs"]["int8"]["busy"] and load["runs"]["int8"]["run"] == "abc123"
    assert load["busy"] and load["busy_items"]["run int8"] == ["bench stage: other processes used 1.00 CPU s per s "
                                                              "while timing"]
    observe(f"runs.int8: busy, {load['runs']['int8']['windows']} records; busy_items {list(load['busy_items'])}")


@pytest.mark.case(name="a file's speed figures are all measured again in one phase (the suite's timing)",
                  kind=4, bad_input=False,
                  expected="restart_timings: earlier processes' windows and this process's build windows leave "
                           "meta.machine_load.timings (they describe no figure now; the report's void banner reads "
                           "timings only), the builds' load is kept under runs and still flags the file; the "
                           "phase's own windows stay")
def test_benchmark_restarted_timings_drop_stale_windows(locks, tmp_path, monkeypatch, observe) -> None:
    R = _results_module()
    path = tmp_path / "suite_x.json"
    monkeypatch.setattr(ml, "read_cpu", FakeCpu(other=1.0))
    first = R.ResultsFile(path, meter=ml.LoadMeter(reader=FakeCpu(step_s=0.0)))
    _fake_timing("an earlier run's timing phase")  # busy
    first.write({"systems": {"a": {"latency_ms_b32": 1.0}}})
    assert first.load()["meta"]["machine_load"]["timings"][0]["busy"]
    second = R.ResultsFile(path, meter=ml.LoadMeter(reader=FakeCpu(step_s=0.0)))  # the rerun
    _fake_timing("a cell build's speedup check")  # busy: a build beside other work
    start = len(ml.closed_windows())
    monkeypatch.setattr(ml, "read_cpu", FakeCpu(other=0.0))
    _fake_timing("the timing phase")  # quiet
    second.restart_timings(before=start)
    second.write({"systems": {"a": {"latency_ms_b32": 2.0}}})
    load = second.load()["meta"]["machine_load"]
    assert [t["what"] for t in load["timings"]] == ["test benchmark: the timing phase"]
    assert not any(t["busy"] for t in load["timings"])
    build = load["runs"]["builds before the timing phase"]
    assert build["busy"] and build["windows"] == 1 and "speedup check" in " ".join(build["reasons"])
    assert load["busy"] and list(load["busy_items"]) == ["run builds before the timing phase"]
    # a refused phase calls nothing: a third process keeps the file's timings as they are
    third = R.ResultsFile(path, meter=ml.LoadMeter(reader=FakeCpu(step_s=0.0)))
    third.write(third.load())
    assert [t["what"] for t in third.load()["meta"]["machine_load"]["timings"]] == ["test benchmark: the timing phase"]
    observe(f"timings after the restart: {[t['what'] for t in load['timings']]}; busy_items {list(load['busy_items'])}")


# --------------------------------------------------------------------------------- guards over the sources
def _calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def _name(call: ast.Call) -> str:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def _writes_a_file(call: ast.Call) -> bool:
    """A call that writes a file other than through ``_results``: atomic_write_json, json.dump to a file,
    Path.write_text / write_bytes, open(..., "w"/"a")."""
    name = _name(call)
    if name in ("atomic_write_json", "write_text", "write_bytes"):
        return True
    if name == "dump" and len(call.args) >= 2:
        return ast.unparse(call.args[1]) not in ("sys.stdout", "sys.stderr")
    if name == "open" and len(call.args) >= 2 and isinstance(call.args[1], ast.Constant):
        return any(c in str(call.args[1].value) for c in "wax")
    return False


TIMES = {"measure_latency", "measure_real_lengths", "timing_window", "perf_counter", "monotonic", "time",
         "build_latency_table"}
# indexing a run manifest's timed sections (what a copied figure was timed in)
READS_TIMED = re.compile(r"""\[\s*["'](bench|deploy|deployed)["']\s*\]|\.get\(\s*["'](bench|deploy|deployed)["']""")


def _scripts() -> list[Path]:
    return sorted(p for p in BENCHMARKS.glob("*.py") if p.name != "_results.py")


def _imported(src: str) -> set[str]:
    """The top-level names of the modules a script imports (at any depth in the file)."""
    out: set[str] = set()
    for n in ast.walk(ast.parse(src)):
        if isinstance(n, ast.ImportFrom) and n.module:
            out.add(n.module.split(".")[0])
        elif isinstance(n, ast.Import):
            out.update(a.name.split(".")[0] for a in n.names)
    return out


# scripts run on a lent GPU machine, where compresslab cannot be imported (no hydra): the entry records the host's
# load itself (os.getloadavg) and writes atomically (os.replace); its timing module is imported only by it
DEVICE_SCRIPTS = {"gpu_bench.py": ("getloadavg", "os.replace"), "gpu_timing.py": (), "gpu_build.py": ()}


def _importers(stem: str) -> set[str]:
    """The stems of the scripts that import the sibling module ``stem`` (``from .x`` or ``import x``)."""
    return {p.stem for p in _scripts() if stem in _imported(p.read_text())}


def _writers() -> set[str]:
    """``_results`` and the sibling modules that write through it (``_ziplm_store``)."""
    return {"_results"} | {p.stem for p in BENCHMARKS.glob("_*.py") if "_results" in _imported(p.read_text())}


@pytest.mark.case(name="a benchmark script that writes or times without recording the load", kind=4, bad_input=False,
                  expected="none: every script writes results only through benchmarks/_results.py (which stamps "
                           "meta.machine_load), every script that times uses it (or a LoadMeter), and every script "
                           "copying timed figures from a run manifest calls note_run")
def test_every_benchmark_records_machine_load(observe) -> None:
    problems, timed, writers = [], [], _writers()
    for path in _scripts():
        src = path.read_text()
        tree = ast.parse(src)
        calls = _calls(tree)
        if path.name in DEVICE_SCRIPTS:
            problems += [f"{path.name} runs on the device: it must call {need}" for need in DEVICE_SCRIPTS[path.name]
                         if need not in src]
            problems += [f"{path.name} is imported by {sorted(_importers(path.stem) - {'gpu_bench'})}: device modules "
                         "are for gpu_bench only" for _ in [0] if _importers(path.stem) - {"gpu_bench", path.stem}]
            continue
        for c in calls:
            if _writes_a_file(c):
                problems.append(f"{path.name}:{c.lineno} writes a file with {_name(c)}(): use _results.ResultsFile "
                                "(figures) or _results.write_aside (no figures)")
        times = sorted({_name(c) for c in calls} & TIMES)
        if times:
            timed.append(path.name)
            # a timing module whose figures return to scripts that write through _results (suite_timing -> suite):
            # ResultsFile stamps the timing windows the process closed, whoever closed them
            via = _importers(path.stem)
            if not (_imported(src) & writers) and "LoadMeter" not in src \
                    and not (via and all(writers & _imported((BENCHMARKS / f"{v}.py").read_text()) for v in via)):
                problems.append(f"{path.name} times ({', '.join(times)}) but neither writes through _results nor "
                                "measures the load with LoadMeter")
        if "manifest.json" in src and READS_TIMED.search(src) and "note_run" not in src:
            problems.append(f"{path.name} copies figures from a run manifest's bench/deploy section without "
                            "ResultsFile.note_run(name, manifest)")
    assert not problems, "\n".join(problems)
    assert {"backends.py", "ziplm.py", "guided_int8.py", "xnor_gemm.py"} <= set(timed)  # the guard sees them
    observe(f"{len(_scripts())} scripts checked, {len(timed)} time something; all record the machine's load")


@pytest.mark.case(name="a package module that times without keeping the machine_load", kind=4, bad_input=False,
                  expected="none: every module calling measure_latency / measure_real_lengths opens a named "
                           "timing_window or passes the result's machine_load on")
def test_every_package_timing_site_keeps_machine_load(observe) -> None:
    sites, problems = [], []
    for path in sorted((REPO / "compresslab").rglob("*.py")):
        src = path.read_text()
        if path.parent.name == "bench" and path.name in ("latency.py", "machine_load.py") or \
                "measure_latency" not in src and "measure_real_lengths" not in src:
            continue  # the timing functions themselves, or no timing at all (not worth parsing)
        names = {_name(c) for c in _calls(ast.parse(src))}
        if names & {"measure_latency", "measure_real_lengths"}:
            rel = str(path.relative_to(REPO))
            sites.append(rel)
            if "timing_window" not in names and "machine_load" not in src:
                problems.append(f"{rel} times without a timing_window or a machine_load record")
    assert not problems, "\n".join(problems)
    assert {"compresslab/pipeline/deploy.py", "compresslab/quant/guided_int8.py",
            "compresslab/pipeline/bench.py"} <= set(sites)
    observe(f"{len(sites)} timing sites: {', '.join(Path(s).name for s in sites)}")
