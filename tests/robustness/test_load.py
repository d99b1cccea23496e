"""Issue #12 kind 4: measurements taken on a busy machine, the training lock, and progress of long work.

Every test uses its own lock directory (``COMPRESSLAB_LOCK_DIR`` under ``tmp_path``: the ``locks``
fixture of conftest.py) and, unless it is about the real CPU clocks, a
:class:`~compresslab.testing.FakeCpu` reader: the machine that runs the tests may be busy (a
training runs beside them), and no test may wait on the machine's locks.
Processes that hold a lock are small children that load ``runlock.py`` alone (no torch), so they
start in a fraction of a second.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import compresslab.bench.machine_load as ml
from compresslab import runlock
from compresslab.bench.latency import measure_latency
from compresslab.runlock import MachineBusyError, Role
from compresslab.testing import FakeCpu

REPO = Path(__file__).resolve().parents[2]
_real_read_cpu = ml.read_cpu  # kept before any fixture replaces it

# A child holding one lock: it loads runlock.py by path (no compresslab package, no torch).
HOLDER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("runlock", sys.argv[1])
r = importlib.util.module_from_spec(spec); sys.modules["runlock"] = r; spec.loader.exec_module(r)
role = r.Role(sys.argv[2])
cm = r.timing_lock("child bench", wait_s=0) if role is r.Role.TIMING else r.hold(role, "child " + role.value)
with cm:
    print("ready", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def holder(locks: Path) -> Iterator[Callable[[Role], subprocess.Popen]]:
    """``holder(role)`` starts a child holding ``role``'s lock and returns once it holds it."""
    children: list[subprocess.Popen] = []

    def start(role: Role) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", HOLDER, runlock.__file__, role.value], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, runlock.LOCK_DIR_ENV: str(locks)})
        children.append(p)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        return p

    yield start
    for p in children:
        p.kill()
        p.wait()


class Runner:
    """A runner that only counts its calls (what is timed does not matter here)."""

    def __init__(self, on_run: Callable[[], None] | None = None) -> None:
        self.calls, self.on_run = 0, on_run

    def run(self, batch: dict) -> None:
        self.calls += 1
        if self.on_run:
            self.on_run()


def _time(runner: Runner | None = None, **kw: Any) -> dict[str, Any]:
    return measure_latency({"model": runner or Runner()}, [(1, 8), (2, 8)], warmup=1, runs=3, **kw)


# --- busy machines are measured, recorded and warned about -------------------------------------------


@pytest.mark.case(name="latency table measured under load", kind=4, bad_input=False,
                  expected="the table is used for this run with a loud warning, marked busy, and not cached; "
                           "a quiet run measures and caches it")
def test_latency_table_measured_busy_is_not_cached(locks, monkeypatch, tmp_path, caplog, observe) -> None:
    import compresslab.bench.latency_table as lt
    from compresslab.models.tiny import tiny_model
    from compresslab.ops.spdy import LatencyTable

    calls: list[dict] = []

    def fake_measure(model: Any, dense: Any, s: Any, env: dict, progress: Any = None) -> tuple:
        calls.append(env)
        return LatencyTable(1e-3, {"attention": {4: 1e-3}, "ffn": {64: 1e-3}}, env), {"dense_ms": 5.0}

    monkeypatch.setattr(lt, "measure_table", fake_measure)
    fp = {"cpu": {"model": "Test CPU", "isa": {}}, "libraries": {"onnxruntime": "1", "torch": "t",
                                                                  "transformers": "x"}, "threads": 1}
    s = lt.TableSettings(batch=2, seq=16, threads=1, ffn_grid=16)
    model = tiny_model("bert")
    cpu = FakeCpu(other=1.0)  # another process keeps one core busy
    monkeypatch.setattr(ml, "read_cpu", cpu)
    with caplog.at_level(logging.WARNING, logger="compresslab"):
        _, info = lt.build_latency_table(model, "dense.onnx", s, cache_dir=tmp_path / "cache", fingerprint=fp)
        _, again = lt.build_latency_table(model, "dense.onnx", s, cache_dir=tmp_path / "cache", fingerprint=fp)
    assert len(calls) == 2 and not again["cached"]  # measured anew: nothing was cached
    assert info["machine_load"]["busy"] and "busy machine" in info["not_cached"] and info["cache_file"] is None
    assert not list((tmp_path / "cache").rglob("*.json"))
    assert "NOT cached" in caplog.text and "MACHINE BUSY" in caplog.text
    cpu.other = 0.0  # the machine is quiet again
    _, quiet = lt.build_latency_table(model, "dense.onnx", s, cache_dir=tmp_path / "cache", fingerprint=fp)
    _, hit = lt.build_latency_table(model, "dense.onnx", s, cache_dir=tmp_path / "cache", fingerprint=fp)
    assert not quiet["machine_load"]["busy"] and quiet["cache_file"] and hit["cached"] and len(calls) == 3
    observe(f"busy: cached={info['cached']}, not_cached={info['not_cached']!r}; quiet: cached on the next run")


@pytest.mark.case(name="ZipLM step timed under load", kind=4, bad_input=False,
                  expected="the step's metrics say the latency table and the speedup checks were busy")
def test_ziplm_step_records_busy_table_and_checks(observe) -> None:
    from types import SimpleNamespace

    from compresslab.pruning.speedup import SpeedupSettings, result_metrics

    load = {"busy": True, "reasons": ["other processes used up to 1.00 CPU s per s while timing (threshold 0.2)"]}
    lab = SimpleNamespace(table_info={"cached": False, "measure_s": 1.0, "cache_file": None,
                                      "not_cached": "measured on a busy machine", "machine_load": load},
                          t_dense=0.01, max_speedup=5.0, linear_record=None, settings=SimpleNamespace(runtime="ort"),
                          runtime_choice=None)
    attempt = {"measured_speedup": 2.4, "busy": True}
    rec = {"target_speedup": 2.0, "attempts": [attempt], "structure": {}}
    m = result_metrics(SpeedupSettings(speedup=2.0), {2.0: rec}, lab, 100)
    assert m["latency_table"]["busy"] and m["latency_table"]["not_cached"] and m["busy_checks"] == 1
    observe(f"latency_table.busy={m['latency_table']['busy']}, busy_checks={m['busy_checks']}")


@pytest.mark.case(name="timing while another process uses the CPU", kind=4, bad_input=False,
                  expected="machine_load.busy=true with the reason (other processes' CPU s per s before and "
                           "during), and a loud MACHINE BUSY warning")
def test_timing_under_load_is_marked_and_warned(locks, monkeypatch, caplog, observe) -> None:
    monkeypatch.setattr(ml, "read_cpu", FakeCpu(other=1.0))
    with caplog.at_level(logging.WARNING, logger="compresslab.bench.machine_load"):
        load = _time()["machine_load"]
    assert load["busy"] and load["before"]["other_cpu"] == pytest.approx(1.0)
    assert load["during"]["other_cpu"] == pytest.approx(1.0) and len(load["reasons"]) == 2
    assert "MACHINE BUSY" in caplog.text and "void" in caplog.text
    quiet = FakeCpu(other=0.05)  # a quiet machine's background (kernel threads, a shell)
    monkeypatch.setattr(ml, "read_cpu", quiet)
    assert not _time()["machine_load"]["busy"]
    observe(f"busy: {load['reasons']}; quiet (0.05 CPU s/s): busy=false")


@pytest.mark.case(name="a short burst of load during one measurement", kind=4, bad_input=False,
                  expected="busy: the burst is judged per measurement, not diluted over the whole window")
def test_short_burst_is_not_diluted(locks, observe) -> None:
    cpu = FakeCpu(other=0.0)
    with ml.timing_window("bench", reader=cpu, probe_s=0) as w:
        for i in range(8):
            with w.span(f"shape{i}"):
                cpu.other = 1.0 if i == 3 else 0.0
            cpu.other = 0.0
    rec = w.record()
    assert rec["during"]["other_cpu"] < ml.BUSY_OTHER_CPU <= rec["during"]["max_other_cpu"]
    assert rec["busy"]
    observe(f"whole window {rec['during']['other_cpu']:.2f}, worst measurement {rec['during']['max_other_cpu']:.2f}"
            f" CPU s/s: busy={rec['busy']}")


@pytest.mark.case(name="repeated runs spread widely", kind=4, bad_input=False,
                  expected="the spread (p90 - p50) / p50 is recorded per cell and a wide one is warned about")
def test_wide_spread_is_recorded_and_warned(locks, caplog, observe) -> None:
    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock, n = Clock(), [0]

    def run() -> None:  # every third call is 4x slower: p90 far above the median
        n[0] += 1
        clock.now += 0.004 if n[0] % 3 == 0 else 0.001

    with caplog.at_level(logging.WARNING, logger="compresslab.bench.machine_load"):
        out = measure_latency({"m": Runner(run)}, [(1, 8)], warmup=0, runs=30, clock=clock)
    cell = out["results"]["m"]["b1xs8"]
    assert cell["spread"] == pytest.approx((cell["p90_ms"] - cell["p50_ms"]) / cell["p50_ms"])
    assert out["machine_load"]["spread"]["noisy"] and "noisy timings" in caplog.text
    observe(f"spread {cell['spread']:.2f} recorded, warned")


@pytest.mark.case(name="a real process burning a core while timing", kind=4, bad_input=False,
                  expected="the real CPU clocks (/proc/stat via psutil) see it: busy=true")
def test_real_busy_process_is_detected(locks, monkeypatch, observe) -> None:
    monkeypatch.setattr(ml, "read_cpu", _real_read_cpu)
    # a grandchild, so it is not this process's child (children's CPU counts as our own work)
    burn = "import time\nt = time.time()\nwhile time.time() - t < 5: pass"
    # the grandchild must not inherit the captured stdout: subprocess.run would wait for its EOF,
    # i.e. for the burn to end, and the window would then see an idle machine
    spawn = (f"import subprocess, sys; print(subprocess.Popen([sys.executable, '-c', {burn!r}], "
             "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)")
    pid = int(subprocess.run([sys.executable, "-c", spawn], capture_output=True, text=True, check=True).stdout)
    try:
        with ml.timing_window("bench", probe_s=0.5) as w, w.span("burn"):
            time.sleep(1.0)
        rec = w.record()
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert rec["busy"] and rec["during"]["max_other_cpu"] >= 0.5
    observe(f"other processes: {rec['before']['other_cpu']:.2f} before, {rec['during']['max_other_cpu']:.2f} "
            "CPU s/s during: busy=true")


# --- the training lock -----------------------------------------------------------------------------


_REFUSES = ("waits (saying for which pid), then refuses naming COMPRESSLAB_LOCK_WAIT_S and COMPRESSLAB_TIME_BUSY, "
            "before timing anything")


@pytest.mark.parametrize("role", [
    pytest.param(Role.TRAINING, id="training", marks=pytest.mark.case(
        name="bench while a training runs", kind=4, expected=_REFUSES)),
    pytest.param(Role.TESTS, id="tests", marks=pytest.mark.case(
        name="bench while make test runs", kind=4, expected=_REFUSES)),
    pytest.param(Role.TIMING, id="timing", marks=pytest.mark.case(
        name="two benches at once", kind=4, expected="the second " + _REFUSES)),
])
def test_timing_waits_then_refuses(role, holder, monkeypatch, expect_clear, caplog) -> None:
    p = holder(role)
    monkeypatch.setenv(runlock.WAIT_ENV, "0.5")
    runner = Runner()
    with caplog.at_level(logging.WARNING, logger="compresslab.runlock"):
        msg = expect_clear(lambda: _time(runner), match=rf"pid {p.pid}.*COMPRESSLAB_LOCK_WAIT_S.*COMPRESSLAB_TIME_BUSY",
                           errors=(MachineBusyError,))
    assert runner.calls == 0, "timed before refusing"
    assert "waiting" in caplog.text and str(p.pid) in caplog.text
    assert role.value in msg


@pytest.mark.case(name="COMPRESSLAB_TIME_BUSY=1 while a training runs", kind=4, bad_input=False,
                  expected="times anyway; machine_load.busy=true, lock.override=true, the holder named")
def test_time_busy_override_marks_the_result(holder, monkeypatch, observe) -> None:
    p = holder(Role.TRAINING)
    monkeypatch.setenv(runlock.WAIT_ENV, "0")
    monkeypatch.setenv(runlock.BUSY_ENV, "1")
    load = _time()["machine_load"]
    assert load["busy"] and load["lock"]["override"] and not load["lock"]["free"]
    assert f"pid {p.pid}" in load["reasons"][0]
    observe(f"timed; busy=true: {load['reasons'][0][:160]}")


@pytest.mark.case(name="COMPRESSLAB_TIME_BUSY=1 with a long wait limit", kind=4, bad_input=False,
                  expected="times at once, without waiting for the training (a new user waited 4 minutes for it)")
def test_time_busy_does_not_wait_first(holder, monkeypatch, observe) -> None:
    holder(Role.TRAINING)
    monkeypatch.setenv(runlock.WAIT_ENV, "600")
    monkeypatch.setenv(runlock.BUSY_ENV, "1")
    with runlock.timing_lock("t") as report:
        assert report.override and report.waited_s < 5
    assert runlock.wait_for_training("t").waited_s < 5


@pytest.mark.case(name="stale lock: the training was killed -9", kind=4, bad_input=False,
                  expected="nothing waits for a dead holder: the kernel dropped its lock, its record is removed")
def test_stale_lock_of_a_killed_training_does_not_block(holder, locks, monkeypatch, observe) -> None:
    p = holder(Role.TRAINING)
    assert [h.pid for h in runlock.holders(Role.TRAINING)] == [p.pid] and not runlock.is_free(Role.TRAINING)
    p.send_signal(signal.SIGKILL)
    p.wait()
    (locks / "training.999999999.json").write_text(json.dumps(  # a record left by a process long gone
        {"pid": 999999999, "role": "training", "what": "old", "since": 0.0}))
    monkeypatch.setenv(runlock.WAIT_ENV, "0")
    t0 = time.monotonic()
    load = _time()["machine_load"]
    assert not load["busy"] and load["lock"]["free"] and time.monotonic() - t0 < 5
    assert runlock.holders(Role.TRAINING) == [] and not list(locks.glob("training.*.json"))
    report = runlock.wait_for_training("pytest", wait_s=0)  # what make test does at start
    assert report.free and report.waited_s < 1
    observe("timed at once; stale records removed; make test's wait passes")


@pytest.mark.case(name="a timing inside training, in the same process", kind=4, bad_input=False,
                  expected="no deadlock on its own lock: it times at once and is marked busy")
def test_timing_inside_training_does_not_wait_on_itself(locks, observe) -> None:
    with runlock.hold(Role.TRAINING, "finetune"):
        load = _time()["machine_load"]
    assert load["busy"] and load["lock"]["own_training"] and "was training" in load["reasons"][0]
    observe(load["reasons"][0])


@pytest.mark.case(name="training holds the lock while it runs", kind=4, bad_input=False,
                  expected="training.train holds training.lock (seen from another process) and lets go after")
def test_training_holds_the_lock(locks, tiny_tok, observe) -> None:
    from compresslab.data.loaders import make_loader
    from compresslab.models.tiny import tiny_model
    from compresslab.testing import tiny_sentiment
    from compresslab.training import TaskLoss, TrainConfig, train

    seen: list[tuple[bool, bool, list[str]]] = []

    class Look:
        def on_step_end(self, step: int, model: Any, optimizer: Any) -> None:
            seen.append((runlock.held_here(Role.TRAINING), runlock.is_free(Role.TRAINING),
                         [h.what for h in runlock.holders(Role.TRAINING)]))

    loader = make_loader(tiny_sentiment(8, 0), tiny_tok, 4, 16)
    train(tiny_model("bert"), loader, TrainConfig(steps=2, batch_size=4), [TaskLoss()], callbacks=[Look()],
          desc="finetune")
    assert seen == [(True, False, ["finetune"])] * 2
    assert runlock.is_free(Role.TRAINING) and not runlock.held_here(Role.TRAINING)
    observe("held during both steps (record says 'finetune'), free after")


@pytest.mark.case(name="make test while a training runs", kind=4,
                  expected="make test (pytest --wait-for-training) waits, saying for which training, then refuses "
                           "(exit 4) naming COMPRESSLAB_TIME_BUSY; no traceback")
def test_pytest_waits_for_training_then_refuses(holder, locks, observe) -> None:
    p = holder(Role.TRAINING)
    env = {**os.environ, runlock.LOCK_DIR_ENV: str(locks)}
    env.pop(runlock.BUSY_ENV, None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "--co", "--wait-for-training=1",
                           "tests/robustness/test_harness.py"],  # as `make test` runs it
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    err = proc.stderr
    observe(f"exit {proc.returncode}: {err.strip()[-300:]}")
    assert proc.returncode == 4 and "Traceback" not in err + proc.stdout, err[-2000:]
    assert f"training pid {p.pid}" in err and "waiting" in err  # said what it waited for, at once
    assert "still running" in err and "COMPRESSLAB_TIME_BUSY=1" in err and "COMPRESSLAB_LOCK_WAIT_S" in err


@pytest.mark.case(name="COMPRESSLAB_LOCK_WAIT_S=abc", kind=4,
                  expected="a one-line error naming COMPRESSLAB_LOCK_WAIT_S, before any training")
def test_bad_wait_variable_fails_up_front(monkeypatch, expect_clear) -> None:
    monkeypatch.setenv(runlock.WAIT_ENV, "abc")
    expect_clear(_settings, match="COMPRESSLAB_LOCK_WAIT_S='abc'.*seconds")


@pytest.mark.case(name="COMPRESSLAB_TIME_BUSY=maybe", kind=4,
                  expected="a one-line error naming COMPRESSLAB_TIME_BUSY and its values, before any training")
def test_bad_busy_variable_fails_up_front(monkeypatch, expect_clear) -> None:
    monkeypatch.setenv(runlock.BUSY_ENV, "maybe")
    expect_clear(_settings, match="COMPRESSLAB_TIME_BUSY='maybe'.*=1")


def _settings() -> None:
    from compresslab.config import compose
    from compresslab.pipeline.settings import RunSettings

    RunSettings.from_config(compose(["+pipeline=int8", "debug=smoke"]))


# --- the bench stage records it -----------------------------------------------------------------------


@pytest.mark.case(name="bench stage on a busy machine", kind=4, bad_input=False,
                  expected="manifest bench.machine_load (busy, reasons, before, during, spread, lock) and a "
                           "MACHINE BUSY note in bench/latency.json")
def test_bench_stage_records_machine_load(locks, monkeypatch, tmp_path, observe) -> None:
    import compresslab.pipeline.bench as pb
    from compresslab.manifest import RunManifest

    monkeypatch.setattr(ml, "read_cpu", FakeCpu(other=1.5))

    def fake_measure(state: Any, run_dir: Path, manifest: Any, threads: int) -> dict[str, Any]:
        return {"latency": _time()["results"], "notes": []}  # nested: joins the stage's window

    monkeypatch.setattr(pb, "_measure", fake_measure)
    manifest = RunManifest.create(tmp_path)
    pb.bench(None, tmp_path, manifest, 1)
    load = manifest.data["bench"]["machine_load"]
    assert load["busy"] and {"before", "during", "spread", "lock", "reasons", "cpus"} <= set(load)
    assert load["during"]["measurements"] == 2  # the nested measure_latency's two shapes
    on_disk = json.loads((tmp_path / "bench" / "latency.json").read_text())
    assert on_disk["machine_load"]["busy"] and any("MACHINE BUSY" in n for n in on_disk["notes"])
    assert json.loads((tmp_path / "manifest.json").read_text())["bench"]["machine_load"]["busy"]
    observe(f"manifest bench.machine_load.busy=true; {load['reasons'][0]}")


# --- progress of long work ----------------------------------------------------------------------------


@pytest.mark.case(name="Fisher inversion shows progress", kind="own", bad_input=False,
                  expected="a progress bar over the modules being inverted (and over the gradients)")
def test_fisher_inversion_shows_progress(locks, tiny_tok, observe) -> None:
    import torch

    from compresslab.data.loaders import make_loader
    from compresslab.models.tiny import tiny_model
    from compresslab.pruning.fisher import timed_inverses
    from compresslab.testing import tiny_sentiment

    bars: list[tuple[str, int]] = []

    def progress(it: Any, total: int | None = None, desc: str = "") -> Any:
        bars.append((desc, total))
        return it

    model = tiny_model("bert")
    mods = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "encoder" in n}
    pruned = {n: torch.zeros(m.weight.numel(), dtype=torch.bool) for n, m in mods.items()}
    batches = iter(make_loader(tiny_sentiment(16, 0), tiny_tok, 4, 16))
    finv, _ = timed_inverses(model, mods, pruned, batches, 2, 8, 1e-4, progress=progress)
    assert ("fisher inverse", len(mods)) in bars and ("fisher grads", 2) in bars and set(finv) == set(mods)
    observe(f"progress bars: {bars}")


@pytest.mark.case(name="a CLI run whose bench is refused", kind=4,
                  expected="one line 'compresslab: error: ...' naming COMPRESSLAB_TIME_BUSY, exit 2, no traceback")
def test_cli_reports_a_refused_timing(monkeypatch, capsys, expect_clear) -> None:
    import compresslab.cli as cli
    import compresslab.pipeline as pipeline
    from compresslab.config import compose

    def refused(cfg: Any, **kw: Any) -> None:  # what the bench stage raises after its wait
        raise MachineBusyError("bench stage: training pid 42 (finetune, for 3 min) still running after 600 s of "
                               "waiting; set COMPRESSLAB_LOCK_WAIT_S=<seconds> to wait longer, or "
                               "COMPRESSLAB_TIME_BUSY=1 to time anyway")

    monkeypatch.setattr(pipeline, "run", refused)
    monkeypatch.setattr(cli, "setup_process", lambda *a: 1)  # leave this process's threads and seeds alone
    cfg = compose(["+pipeline=int8", "debug=smoke"])
    expect_clear(lambda: cli._main(cfg), errors=(SystemExit,))
    err = capsys.readouterr().err
    assert err.startswith("compresslab: error: bench stage: training pid 42") and "COMPRESSLAB_TIME_BUSY=1" in err
    assert len(err.strip().splitlines()) == 1


def test_a_reading_too_short_for_the_clock_is_recorded_not_judged() -> None:
    """One 10 ms tick of other processes' CPU over a 5 ms window reads as 2 CPU s per s: such a window (or span)
    is not a busy machine. A long enough window with the same load is."""
    from compresslab.bench import machine_load as ml
    from compresslab.testing import FakeCpu

    short = FakeCpu(other=0.0, step_s=0.005)
    with ml.timing_window("short", reader=short, probe_s=0.0) as w:
        short.other = 2.0  # one reading's worth of 'load' inside a 5 ms window
    rec = w.record()
    assert not rec["busy"] and "not_judged" in rec["during"] and rec["during"]["max_other_cpu"] == 0.0
    long = FakeCpu(other=0.0, step_s=ml.MIN_JUDGED_S)
    with ml.timing_window("long", reader=long, probe_s=0.0) as w:
        long.other = 2.0
        with w.span("burst"):
            pass
    rec = w.record()
    assert rec["busy"] and "not_judged" not in rec["during"]
