"""measure_latency / measure_real_lengths on fake runners and a fake clock (exact numbers)."""

from __future__ import annotations

import numpy as np
import pytest

from compresslab.bench.latency import (
    make_inputs,
    measure_latency,
    measure_real_lengths,
    real_length_speedups,
    speedups,
    summarize,
)


class FakeClock:
    """Time only moves when a fake runner 'works', so every measured duration is exact."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeRunner:
    """Records its calls in a shared log and advances the clock by the next scripted duration."""

    def __init__(self, name: str, log: list, clock: FakeClock, durations_s, vocab_size=None):
        self.name, self.log, self.clock = name, log, clock
        self.durations = list(durations_s)
        self.calls = 0
        self.threads = 1
        self.vocab_size = vocab_size
        self.batches: list[dict] = []

    def run(self, batch):
        self.log.append(self.name)
        self.batches.append(batch)
        self.clock.now += self.durations[self.calls % len(self.durations)]
        self.calls += 1


def test_warmup_then_interleaved_order_and_same_inputs():
    log: list[str] = []
    clock = FakeClock()
    a = FakeRunner("A", log, clock, [0.001])
    b = FakeRunner("B", log, clock, [0.002])
    out = measure_latency({"a": a, "b": b}, [(1, 8)], warmup=2, runs=3, clock=clock)
    assert log == ["A", "A", "B", "B"] + ["A", "B"] * 3
    assert all(x is a.batches[0] for x in a.batches + b.batches)  # inputs built once per shape
    assert out["results"]["a"]["b1xs8"]["n"] == 3
    assert out["runners"]["a"] == {"threads": 1}
    assert out["settings"]["order"] == "interleaved"


def test_medians_p90_mean_and_throughput_are_exact():
    clock = FakeClock()
    durations = [x / 1000 for x in range(1, 11)]  # 1..10 ms
    a = FakeRunner("A", [], clock, durations)
    b = FakeRunner("B", [], clock, [0.002])
    out = measure_latency({"a": a, "b": b}, [(4, 16)], warmup=0, runs=10, clock=clock)
    stats = out["results"]["a"]["b4xs16"]
    assert stats["p50_ms"] == pytest.approx(5.5)
    assert stats["p90_ms"] == pytest.approx(9.1)  # numpy linear interpolation
    assert stats["mean_ms"] == pytest.approx(5.5)
    assert stats["n"] == 10
    assert stats["throughput"] == pytest.approx(4 / 0.0055)
    assert out["results"]["b"]["b4xs16"]["p50_ms"] == pytest.approx(2.0)


def test_min_time_adds_rounds_up_to_the_cap():
    clock = FakeClock()
    a = FakeRunner("A", [], clock, [0.125])  # exact in binary, so no rounding at the boundary
    out = measure_latency({"a": a}, [(1, 8)], warmup=0, runs=2, min_time_s=1.0, clock=clock)
    assert out["results"]["a"]["b1xs8"]["n"] == 8  # 8 x 125 ms reaches 1 s
    out = measure_latency({"a": a}, [(1, 8)], warmup=0, runs=2, min_time_s=10.0, max_runs=5,
                          clock=clock)
    assert out["results"]["a"]["b1xs8"]["n"] == 5


def test_shapes_and_vocab_bound():
    clock = FakeClock()
    a = FakeRunner("A", [], clock, [0.001], vocab_size=50)
    b = FakeRunner("B", [], clock, [0.001], vocab_size=7)
    out = measure_latency({"a": a, "b": b}, [(1, 8), (3, 5)], warmup=1, runs=1, clock=clock)
    assert set(out["results"]["a"]) == {"b1xs8", "b3xs5"}
    assert out["settings"]["vocab_size"] == 7  # smallest declared vocabulary, valid for all
    last = a.batches[-1]
    assert last["input_ids"].shape == (3, 5) and last["input_ids"].max() < 7
    assert last["input_ids"].dtype == np.int64


def test_make_inputs_is_valid_and_seeded():
    x = make_inputs(2, 6, 30, np.random.default_rng(1))
    y = make_inputs(2, 6, 30, np.random.default_rng(1))
    np.testing.assert_array_equal(x["input_ids"], y["input_ids"])
    assert (x["attention_mask"] == 1).all() and (x["token_type_ids"] == 0).all()
    assert 0 <= x["input_ids"].min() and x["input_ids"].max() < 30
    with pytest.raises(ValueError):
        make_inputs(0, 6, 30, np.random.default_rng(1))


def test_speedups_use_medians_vs_denominator():
    results = {"results": {
        "ort_fp32": {"b1xs128": {"p50_ms": 10.0}, "b32xs128": {"p50_ms": 200.0}},
        "ort_int8": {"b1xs128": {"p50_ms": 4.0}, "b32xs128": {"p50_ms": 50.0}},
        "torch_fp32": {"b1xs128": {"p50_ms": 20.0}},
    }}
    s = speedups(results)
    assert s["ort_fp32"] == {"b1xs128": 1.0, "b32xs128": 1.0}
    assert s["ort_int8"] == {"b1xs128": 2.5, "b32xs128": 4.0}
    assert s["torch_fp32"] == {"b1xs128": 0.5}
    assert speedups(results["results"], denominator="torch_fp32")["ort_fp32"]["b1xs128"] == 2.0
    with pytest.raises(KeyError, match="ort_fp32"):
        speedups(results, denominator="missing")


def test_argument_checks():
    clock = FakeClock()
    a = FakeRunner("A", [], clock, [0.001])
    with pytest.raises(ValueError, match="runs"):
        measure_latency({"a": a}, [(1, 8)], warmup=0, runs=0)
    with pytest.raises(ValueError, match="runners"):
        measure_latency({}, [(1, 8)], warmup=0, runs=1)
    with pytest.raises(ValueError):
        summarize([], 1)


def _batch(b: int, s: int) -> dict[str, np.ndarray]:
    return {"input_ids": np.ones((b, s), np.int64), "attention_mask": np.ones((b, s), np.int64)}


def test_real_lengths_interleave_by_batch_and_report_throughput():
    log: list[str] = []
    clock = FakeClock()
    a = FakeRunner("A", log, clock, [0.010, 0.020])  # batch 0 takes 10 ms, batch 1 takes 20 ms
    b = FakeRunner("B", log, clock, [0.005])
    batches = [_batch(4, 12), _batch(2, 30)]
    out = measure_real_lengths({"a": a, "b": b}, batches, rounds=3, clock=clock)
    assert log == ["A", "B"] * 2 * 4  # one warm-up round + 3 rounds, A B per batch
    assert a.batches[2] is batches[0] and b.batches[3] is batches[1]
    ra, rb = out["results"]["a"], out["results"]["b"]
    assert ra["total_wall_s"] == pytest.approx(0.030)
    assert ra["sentences_per_s"] == pytest.approx(6 / 0.030)
    assert ra["p50_ms"] == pytest.approx([10.0, 20.0])
    assert rb["sentences_per_s"] == pytest.approx(6 / 0.010)
    assert out["settings"]["n_sentences"] == 6 and out["settings"]["max_padded_len"] == 30
    assert real_length_speedups(out, denominator="a") == pytest.approx({"a": 1.0, "b": 3.0})
    with pytest.raises(ValueError, match="batches"):
        measure_real_lengths({"a": a}, [], rounds=1)


def test_kept_round_times_pair_up_and_survive_a_machine_state_switch():
    """A machine that turns slow halfway (every call 30% slower for the base, 60% for the model, as seen on a
    shared VM) with runners whose medians land in different states: the ratio of medians is off, the paired
    median is the per-state ratio of the state most rounds were in."""
    from compresslab.bench.latency import paired_speedup

    clock = FakeClock()
    # base: 4 fast rounds at 100 ms then 5 slow at 130 ms; model: 4 fast at 40 ms then 5 slow at 64 ms
    base = FakeRunner("B", [], clock, [0.100] * 4 + [0.130] * 5)
    model = FakeRunner("M", [], clock, [0.040] * 4 + [0.064] * 5)
    out = measure_latency({"base": base, "model": model}, [(1, 8)], warmup=0, runs=9, clock=clock, keep_times=True)
    tb = out["results"]["base"]["b1xs8"]["times_ms"]
    tm = out["results"]["model"]["b1xs8"]["times_ms"]
    assert tb == pytest.approx([100.0] * 4 + [130.0] * 5) and tm == pytest.approx([40.0] * 4 + [64.0] * 5)
    assert paired_speedup(tb, tm) == pytest.approx(130.0 / 64.0)  # the slow state: 5 of 9 rounds
    assert speedups(out, "base")["model"]["b1xs8"] == pytest.approx(130.0 / 64.0)  # medians: same state here
    # one more fast round moves only the model's median into the fast state: medians give 115 / 40
    base2 = FakeRunner("B", [], clock, [0.100] * 5 + [0.130] * 5)
    model2 = FakeRunner("M", [], clock, [0.040] * 6 + [0.064] * 4)
    out2 = measure_latency({"base": base2, "model": model2}, [(1, 8)], warmup=0, runs=10, clock=clock, keep_times=True)
    r = out2["results"]
    assert speedups(out2, "base")["model"]["b1xs8"] == pytest.approx(115.0 / 40.0)  # 2.875: mixed states
    assert paired_speedup(r["base"]["b1xs8"]["times_ms"], r["model"]["b1xs8"]["times_ms"]) == pytest.approx(2.5)
    # times stay in round order (a sort would break the pairing): fast, slow, fast, slow, slow
    base3 = FakeRunner("B", [], clock, [0.100, 0.130, 0.100, 0.130, 0.130])
    model3 = FakeRunner("M", [], clock, [0.040, 0.064, 0.040, 0.064, 0.064])
    out3 = measure_latency({"base": base3, "model": model3}, [(1, 8)], warmup=0, runs=5, clock=clock, keep_times=True)
    r3 = out3["results"]
    assert r3["model"]["b1xs8"]["times_ms"] == pytest.approx([40.0, 64.0, 40.0, 64.0, 64.0])
    assert paired_speedup(r3["base"]["b1xs8"]["times_ms"], r3["model"]["b1xs8"]["times_ms"]) == pytest.approx(130.0 / 64.0)
    assert "times_ms" not in measure_latency({"base": base}, [(1, 8)], warmup=0, runs=2, clock=clock)["results"]["base"]["b1xs8"]
    with pytest.raises(ValueError, match="equal"):
        paired_speedup([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="positive"):
        paired_speedup([1.0], [0.0])


def test_a_runner_that_spins_after_its_call_settles_untimed_after_every_call(monkeypatch):
    """A runner with ``settle_s`` (torch on CPU: its OpenMP workers spin after the call) is followed by an untimed
    wait after each of its calls, warm-up included, in both timing loops; the wait never enters a timed figure,
    and a runner without it is not waited for."""
    import compresslab.bench.latency as lat

    log: list[str] = []
    clock = FakeClock()
    a = FakeRunner("A", log, clock, [0.001])
    spinner = FakeRunner("T", log, clock, [0.004])
    spinner.settle_s = 0.25  # far longer than any call: would show in every figure if it were timed
    b = FakeRunner("B", log, clock, [0.002])

    def fake_settle(runner):  # the real one spins on the wall clock; here it moves the fake one
        s = getattr(runner, "settle_s", 0.0)
        if s:
            log.append("settle")
            clock.now += s

    monkeypatch.setattr(lat, "settle", fake_settle)
    out = lat.measure_latency({"a": a, "t": spinner, "b": b}, [(1, 8)], warmup=1, runs=3, clock=clock)
    assert log == ["A", "T", "settle", "B"] + ["A", "T", "settle", "B"] * 3
    assert [out["results"][n]["b1xs8"]["p50_ms"] for n in ("a", "t", "b")] == pytest.approx([1.0, 4.0, 2.0])
    # min_time_s counts the timed calls only (7 ms a round here): the 250 ms settles would end it after one round
    out = lat.measure_latency({"a": a, "t": spinner, "b": b}, [(1, 8)], warmup=0, runs=1, min_time_s=0.05,
                              clock=clock)
    assert out["results"]["a"]["b1xs8"]["n"] == 8
    log.clear()
    batches = [make_inputs(2, 8, 50, np.random.default_rng(0))]
    rl = lat.measure_real_lengths({"t": spinner, "b": b}, batches, rounds=2, clock=clock)
    assert log == ["T", "settle", "B"] * 3  # one warm-up round, two timed
    assert rl["results"]["t"]["total_wall_s"] == pytest.approx(0.004)


def test_settle_spins_for_the_runners_settle_time_and_torch_on_cpu_declares_one():
    import time

    import torch

    from compresslab.bench.latency import settle
    from compresslab.bench.runners import TORCH_CPU_SETTLE_S, TorchRunner

    class R:
        settle_s = 0.02

    t0 = time.perf_counter()
    settle(R())
    assert time.perf_counter() - t0 >= 0.02
    t0 = time.perf_counter()
    settle(object())  # no settle_s: returns at once
    assert time.perf_counter() - t0 < 0.01
    model = torch.nn.Linear(2, 2)
    model.config = None
    r = TorchRunner(model, 2)
    assert r.settle_s == TORCH_CPU_SETTLE_S > 0 and r.info()["settle_s"] == TORCH_CPU_SETTLE_S
    assert TorchRunner(model, 1).settle_s == 0  # one thread: no OpenMP worker to spin


# -- trial 48, 10: the bench stage printed nothing for ~12 minutes and looked hung. With ``log_as`` each shape logs
# what it times as it starts and its time and medians as it ends, and real-length throughput one line per round;
# never a line per call, so a log stays readable.

def test_each_shape_logs_one_line_as_it_starts_and_one_as_it_ends(caplog):
    clock = FakeClock()
    runners = {"ort_fp32": FakeRunner("A", [], clock, [0.004]), "deployed": FakeRunner("B", [], clock, [0.002])}
    with caplog.at_level("INFO", logger="compresslab.bench.latency"):
        measure_latency(runners, [(1, 8), (32, 8)], warmup=2, runs=50, clock=clock, log_as="bench")
    lines = [r.getMessage() for r in caplog.records if r.name == "compresslab.bench.latency"]
    assert lines == [
        "bench: timing b1xs8 (shape 1 of 2): ort_fp32, deployed, interleaved, 2 warm-up call(s) each, then at least "
        "50 round(s)",
        "bench: b1xs8 timed in 0 s, 50 round(s); p50 ort_fp32 4 ms, deployed 2 ms",
        "bench: timing b32xs8 (shape 2 of 2): ort_fp32, deployed, interleaved, 2 warm-up call(s) each, then at "
        "least 50 round(s)",
        "bench: b32xs8 timed in 0 s, 50 round(s); p50 ort_fp32 4 ms, deployed 2 ms"]


def test_min_time_is_said_and_the_shape_time_counts_warmup(caplog):
    clock = FakeClock()
    runners = {"a": FakeRunner("A", [], clock, [1.0])}
    with caplog.at_level("INFO", logger="compresslab.bench.latency"):
        measure_latency(runners, [(1, 8)], warmup=3, runs=2, min_time_s=5.0, max_runs=10, clock=clock, log_as="x")
    start, end = [r.getMessage() for r in caplog.records if r.name == "compresslab.bench.latency"]
    assert start.endswith("then at least 2 round(s) (up to 10, until 5 s are timed)")
    assert end == "x: b1xs8 timed in 8 s, 5 round(s); p50 a 1e+03 ms"  # 3 warm-up + 5 timed seconds


def test_without_log_as_timing_is_silent(caplog):
    clock = FakeClock()
    with caplog.at_level("DEBUG", logger="compresslab.bench.latency"):
        measure_latency({"a": FakeRunner("A", [], clock, [0.001])}, [(1, 8)], warmup=1, runs=3, clock=clock)
        measure_real_lengths({"a": FakeRunner("A", [], clock, [0.001])},
                             [{"input_ids": np.zeros((2, 4), dtype=np.int64)}], rounds=2, clock=clock)
    assert not [r for r in caplog.records if r.name == "compresslab.bench.latency"]


def test_real_length_logs_its_start_and_each_round(caplog):
    clock = FakeClock()
    batches = [{"input_ids": np.zeros((4, 6), dtype=np.int64)}, {"input_ids": np.zeros((3, 9), dtype=np.int64)}]
    with caplog.at_level("INFO", logger="compresslab.bench.latency"):
        measure_real_lengths({"a": FakeRunner("A", [], clock, [1.0]), "b": FakeRunner("B", [], clock, [1.0])},
                             batches, rounds=3, clock=clock, log_as="bench")
    lines = [r.getMessage() for r in caplog.records if r.name == "compresslab.bench.latency"]
    assert lines == ["bench: timing real-length throughput: 2 dev batch(es) of 7 sentences on a, b, interleaved, "
                     "1 warm-up and 3 timed round(s)",
                     "bench: real-length round 1 of 3 done (8 s so far)",
                     "bench: real-length round 2 of 3 done (12 s so far)",
                     "bench: real-length round 3 of 3 done (16 s so far)"]


def test_the_pipeline_stages_that_time_for_minutes_ask_for_the_lines():
    """Every measure_latency / measure_real_lengths call of the pipeline's bench and deploy=auto logs as it goes."""
    import ast
    from pathlib import Path

    import compresslab.pipeline.bench as bench
    import compresslab.pipeline.deploy as deploy

    for mod in (bench, deploy):
        calls = [n for n in ast.walk(ast.parse(Path(mod.__file__).read_text())) if isinstance(n, ast.Call)
                 and getattr(n.func, "id", None) in ("measure_latency", "measure_real_lengths")]
        assert calls and all(any(k.arg == "log_as" for k in c.keywords) for c in calls), mod.__name__
