"""The validation carve: random (unchanged splits) and grouped (whole texts; no phrase or duplicate leaks)."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from compresslab.data import carve as carve_mod
from compresslab.data.carve import CARVES, MAX_SPAN_TOKENS, carve_validation, check_carve, default_group_count
from compresslab.data.schema import Example, MissingSplit
from compresslab.data.tasks import load_run_task, load_task
from compresslab.data.user import task_from_user_data


def _ex(text: str, label: int = 0, b: str | None = None) -> Example:
    return Example(text, b, label)


def _spans(text: str) -> set[str]:
    toks = text.split()
    return {" ".join(toks[a:b]) for a, b in itertools.combinations(range(len(toks) + 1), 2)}


def _phrase_bank(n_sentences: int, seed: int) -> list[Example]:
    """SST-2's shape: each sentence and a few of its phrases (contiguous token spans), shuffled."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(40)]
    out: list[Example] = []
    for s in range(n_sentences):
        toks = [rng.choice(vocab) for _ in range(rng.randint(4, 12))]
        out.append(_ex(" ".join(toks), s % 2))
        for _ in range(rng.randint(0, 6)):
            a = rng.randrange(len(toks))
            b = rng.randrange(a + 1, len(toks) + 1)
            out.append(_ex(" ".join(toks[a:b]), rng.randint(0, 1)))
    rng.shuffle(out)
    return out


def test_random_carve_is_the_split_every_earlier_run_used() -> None:
    """The pre-val_carve algorithm, written out: cached teachers and run hashes depend on it."""
    train_all = [_ex(f"text {i}", i % 2) for i in range(200)]
    got = carve_validation(train_all, None, seed=42)
    is_val = np.zeros(200, dtype=bool)
    is_val[np.random.default_rng([0, 42]).permutation(200)[:10]] = True
    assert got.validation == [e for e, v in zip(train_all, is_val) if v]
    assert got.train == [e for e, v in zip(train_all, is_val) if not v]
    assert got.info == {"val_carve": "random"}


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_grouped_carve_leaks_no_phrase_of_a_validation_sentence(seed: int) -> None:
    train_all = _phrase_bank(300, seed)
    got = carve_validation(train_all, 30, seed=seed, how="grouped")
    texts = [e.text_a for e in train_all]
    proper = set().union(*(_spans(u) - {u} for u in set(texts)))  # reference: brute force over all spans
    roots = set(texts) - proper
    val = [e.text_a for e in got.validation]
    assert len(val) == 30 == len(set(val))
    assert set(val) <= roots  # whole texts only: none is a phrase of another example
    kept_roots = roots - set(val)
    kept_spans = set().union(*(_spans(r) for r in kept_roots))
    val_spans = set().union(*(_spans(v) for v in val))
    train = [e.text_a for e in got.train]
    # nothing of a validation sentence stays in train unless a kept sentence holds it too
    assert not [t for t in train if t in val_spans and t not in kept_spans]
    # ...and nothing else was dropped: every example of a kept group stays
    assert sorted(train) == sorted(t for t in texts if t in kept_spans)
    assert got.info["val_groups"] == len(roots)
    assert got.info["val_dropped_from_train"] == len(texts) - len(train) - len(val)
    assert got.info["val_dropped_from_train"] > 0
    # file order kept in both splits
    pos = {id(e): i for i, e in enumerate(train_all)}
    for split in (got.train, got.validation):
        idx = [pos[id(e)] for e in split]
        assert idx == sorted(idx)


def test_grouped_carve_on_a_known_tree() -> None:
    train_all = [_ex("a b c d"), _ex("b c"), _ex("x y z"), _ex("y z"), _ex("c"), _ex("z"), _ex("b c")]
    # roots: "a b c d" and "x y z"; "c" is in the first only, "z" in the second only
    for seed in range(6):
        got = carve_validation(train_all, 1, seed=seed, how="grouped")
        (v,) = [e.text_a for e in got.validation]
        assert v in ("a b c d", "x y z")
        train = [e.text_a for e in got.train]
        assert train == (["x y z", "y z", "z"] if v == "a b c d" else ["a b c d", "b c", "c", "b c"])
        assert got.info == {"val_carve": "grouped", "val_groups": 2,
                            "val_dropped_from_train": len(train_all) - len(train) - 1}


def test_grouped_carve_keeps_a_phrase_shared_with_a_kept_sentence() -> None:
    train_all = [_ex("the film is good"), _ex("the film is bad"), _ex("the film"), _ex("good"), _ex("bad")]
    got = carve_validation(train_all, 1, seed=0, how="grouped")
    val = got.validation[0].text_a
    gone = "good" if val == "the film is good" else "bad"
    assert [e.text_a for e in got.train] == [t.text_a for t in train_all if t.text_a not in (val, gone)]
    assert "the film" in [e.text_a for e in got.train]


def test_grouped_carve_groups_duplicates_and_pairs_by_exact_text() -> None:
    # whitespace does not make a new text; pairs are never spans of each other
    train_all = [_ex("p q", b="r s"), _ex("p  q", b="r s "), _ex("p", b="r"), _ex("u v", b="w"), _ex("k", b="l")]
    got = carve_validation(train_all, 2, seed=3, how="grouped")
    assert got.info["val_groups"] == 4
    val = {(" ".join(e.text_a.split()), e.text_b.strip()) for e in got.validation}
    train = {(" ".join(e.text_a.split()), e.text_b.strip()) for e in got.train}
    assert len(val) == 2 and not val & train
    assert len(got.train) + len(got.validation) + got.info["val_dropped_from_train"] == 5
    if ("p q", "r s") in val:  # its duplicate went with it, and was not put in validation twice
        assert got.info["val_dropped_from_train"] == 1


def test_grouped_carve_is_seeded_and_differs_from_the_random_stream() -> None:
    train_all = _phrase_bank(200, 0)
    a = carve_validation(train_all, 20, seed=5, how="grouped")
    b = carve_validation(list(train_all), 20, seed=5, how="grouped")
    c = carve_validation(train_all, 20, seed=6, how="grouped")
    assert a.validation == b.validation and a.train == b.train
    assert a.validation != c.validation


def test_carve_refuses_bad_settings_with_the_key_to_change() -> None:
    assert CARVES == ("random", "grouped")
    assert check_carve(None) == "random"
    for bad in ("stratified", "", 1, True):
        with pytest.raises(ValueError, match="val_carve=.*random, grouped"):
            check_carve(bad)
    two_groups = [_ex("a b"), _ex("a"), _ex("c d"), _ex("d")]
    with pytest.raises(ValueError, match="val_size=2 would leave no training group .*2 groups"):
        carve_validation(two_groups, 2, seed=0, how="grouped")
    with pytest.raises(ValueError, match="val_size=4 would leave no training examples"):
        carve_validation(two_groups, 4, seed=0, how="random")
    missing = carve_validation(MissingSplit("no train file"), None, seed=0, how="grouped")
    assert isinstance(missing.validation, MissingSplit) and "no validation split" in missing.validation.reason


def test_grouped_carve_stops_on_texts_too_long_for_span_grouping(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [_ex(" ".join(f"t{i}" for i in range(60)))] + [_ex(" ".join(["x"] * m)) for m in range(1, 30)]
    # tokens joined: only roots are enumerated (the 60-token text, then "x"*29), each over the shorter lengths
    work = sum((60 - m + 1) * m for m in range(1, 30)) + sum((29 - m + 1) * m for m in range(1, 29))
    monkeypatch.setattr(carve_mod, "MAX_SPAN_TOKENS", work - 1)
    with pytest.raises(ValueError, match="would join more than .* tokens .*too long for span grouping.*"
                                         "val_carve=random"):
        carve_validation(texts, 1, seed=0, how="grouped")
    monkeypatch.setattr(carve_mod, "MAX_SPAN_TOKENS", work)  # the exact work passes: the count is not a loose bound
    assert carve_validation(texts, 1, seed=0, how="grouped").info["val_groups"] == 2  # 60 tokens, 29 x's
    assert MAX_SPAN_TOKENS == 200_000_000


def test_grouped_default_size_leaves_most_groups_in_train() -> None:
    # 100 sentences with 14 phrases each: 5% of 1,500 examples would be 75 of the 100 sentences
    rows = []
    for s in range(100):
        toks = [f"s{s}w{i}" for i in range(6)]
        rows.append(_ex(" ".join(toks)))
        rows += [_ex(" ".join(toks[a:a + m])) for m in (1, 2, 3) for a in range(6 - m + 1)][:14]
    got = carve_validation(rows, None, seed=0, how="grouped")
    assert len(got.validation) == 20 == default_group_count(len(rows), 100)
    assert default_group_count(67349, 6885) == 1000  # SST-2: the examples' default, as measured
    with pytest.raises(ValueError, match="val_size must be a non-negative integer"):
        carve_validation(rows, -1, seed=0, how="grouped")
    with pytest.raises(ValueError, match="val_size must be a non-negative integer"):
        carve_validation(rows, True, seed=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("task", ["sst2", "mrpc"])
def test_grouped_carve_is_the_same_in_processes_with_other_string_hashes(task: str, data_root: Path) -> None:
    """Sets of strings iterate in a per-process order (PYTHONHASHSEED): the split must not depend on it."""
    code = ("import hashlib,sys; from compresslab.data.tasks import load_task; "
            f"t = load_task({task!r}, sys.argv[1], val_carve='grouped', seed=42); "
            "print(hashlib.sha256(repr([t.train, t.validation]).encode()).hexdigest())")
    outs = {subprocess.run([sys.executable, "-c", code, str(data_root)], env={**os.environ, "PYTHONHASHSEED": h},
                           capture_output=True, text=True, check=True).stdout for h in ("0", "12345")}
    assert len(outs) == 1


def test_load_task_and_user_data_take_the_carve(tmp_path: Path) -> None:
    glue = tmp_path / "glue" / "SST-2"
    glue.mkdir(parents=True)
    rows = _phrase_bank(120, 1)
    (glue / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"{e.text_a}\t{e.label}\n" for e in rows))
    (glue / "dev.tsv").write_text("sentence\tlabel\nw1 w2 w3\t1\nw4 w5\t0\n")
    task = load_task("sst2", tmp_path, val_size=10, val_carve="grouped", seed=7)
    direct = carve_validation(rows, 10, seed=7, how="grouped")
    assert task.validation == direct.validation and task.train == direct.train
    assert task.info["val_carve"] == "grouped" and task.info["val_dropped_from_train"] > 0
    assert load_task("sst2", tmp_path, val_size=10, seed=7).info["val_carve"] == "random"
    recorded = {"task": {"name": "sst2", "val_size": 10, "val_carve": "grouped"}, "data": {"root": str(tmp_path)},
                "seed": 7}  # a run's manifest config: benchmarks rebuild the split it read
    assert load_run_task(recorded).validation == direct.validation
    with pytest.raises(ValueError, match="val_carve='rows'"):
        load_task("sst2", tmp_path, val_carve="rows")
    user = task_from_user_data([(e.text_a, e.label) for e in rows], val_size=10, val_carve="grouped", seed=7)
    assert [e.text_a for e in user.validation] == [e.text_a for e in direct.validation]
    assert user.info["val_carve"] == "grouped"
    with pytest.raises(ValueError, match="val_carve="):
        task_from_user_data([("a", 0), ("b", 1)], val_carve="nope")


def test_grouped_carve_on_real_sst2_holds_dev_like_sentences(data_root: Path) -> None:
    """SST-2's train split is sentences plus their parse-tree phrases: the grouped carve's validation
    must look like dev (whole sentences), and no phrase only of a validation sentence may stay in train."""
    random_ = load_task("sst2", data_root, seed=42)
    grouped = load_task("sst2", data_root, val_carve="grouped", seed=42)

    def mean_words(split: list[Example]) -> float:
        return float(np.mean([len(e.text_a.split()) for e in split]))

    dev = mean_words(grouped.dev)
    assert abs(mean_words(random_.validation) - dev) > 8  # the fault: phrases (~9 words) vs sentences (~19.5)
    assert abs(mean_words(grouped.validation) - dev) < 1.5
    assert len(grouped.validation) == 1000 and grouped.info["val_groups"] > 6000
    def norm(t: str) -> str:
        return " ".join(t.split())

    val = {norm(e.text_a) for e in grouped.validation}
    val_spans = set().union(*(_spans(v) for v in val))
    train = {norm(e.text_a) for e in grouped.train}
    assert not val & train
    shared = sorted(train & val_spans)  # phrases of validation sentences still in train...
    assert len(shared) > 100  # (they exist: the check below is not vacuous)
    padded = [f" {t} " for t in train]
    for phrase in random.Random(0).sample(shared, 300):  # ...are each a phrase of a kept sentence too
        holders = sum(f" {phrase} " in t for t in padded)
        assert holders >= 2, f"{phrase!r} is in train only as a phrase of validation sentences"
