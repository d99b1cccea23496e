"""How the cross-run comparison arranges its runs (:class:`~compresslab.report.compare_points.RunPoint`): into
groups scored on the same examples (:func:`assign_groups`), the settings a sweep swept (:func:`varied`), each run's
label in the plots (:func:`assign_labels`) and the Pareto front (:func:`pareto_front`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from compresslab.report.compare_points import RunPoint
from compresslab.report.fmt import DASH, plain

# A point's label in the plots names at most this many swept settings, each value cut to its last characters
# (a model path's end names the model): more crowd the plot, and the runs table has them all in full.
MAX_LABEL_SETTINGS, MAX_LABEL_VALUE = 2, 24


def assign_groups(points: Sequence[RunPoint]) -> None:
    """Set each run's ``group`` (and ``slug``): its task, plus the dev data (file name and short hash)
    where runs of that task were scored on different data (``task=generic``: each user's own files),
    plus the scored subset (split, number of examples, seed) where they were scored on different
    examples (``task.max_dev`` / ``debug=smoke`` slices, ``eval.split``), so scores measured on
    different examples are never ranked, swept or plotted together, and each group says which."""
    by_task = group_by(points, "task")
    for task, group in by_task.items():
        for attr in ("data", "subset"):
            keys = list(dict.fromkeys(getattr(p, attr) for p in group))
            if len(keys) == 2 and None in keys and (attr == "subset" or task[0] != "generic"):
                keys.remove(None)  # a named task's data is fixed by its name, and a manifest older than input
                for p in group:  # hashes (or without eval.n) joins the one recorded data set / subset
                    setattr(p, attr, getattr(p, attr) or keys[0])
        datas = list(dict.fromkeys(p.data for p in group))
        subsets = list(dict.fromkeys(p.subset for p in group))
        for p in group:
            name, slug = [task[0]], [task[0]]
            if len(datas) > 1:
                part = [p.data_name, p.data[1][:8]] if p.data is not None else ["dev data not recorded"]
                name += part
                slug += part
            if len(subsets) > 1:
                name.append(p.subset_name or "scored examples not recorded")
                slug.append(p.subset_short if p.subset is not None else "subset_unknown")
            p.group, p.slug = " · ".join(name), "_".join(slug)
        clash = Counter(p.group for p in group)
        alike = {g for g, c in clash.items() if c > 1 and len({q.data for q in group if q.group == g}) > 1}
        for p in group:
            if p.group in alike and p.data is not None:
                labels = "/".join(p.data[2]) or "none"  # same file, other labels
                p.group += f" · labels {labels}"
                p.slug += f"_labels_{labels}"


def varied(points: Sequence[RunPoint]) -> list[str]:
    """Settings whose values differ between the runs (what a sweep swept), in config order. A
    setting some runs lack (written by an older version) is not a difference."""
    keys = list(dict.fromkeys(k for p in points for k in p.settings))
    return [k for k in keys if len({repr(p.settings[k]) for p in points if k in p.settings}) > 1]


def swept(points: Sequence[RunPoint]) -> dict[tuple[str, str], list[str]]:
    """Per pipeline and group, the settings its runs differ in: the runs table's "settings swept"."""
    return {k: varied(g) for k, g in group_by(points, "pipeline", "group").items()}


def assign_labels(points: Sequence[RunPoint]) -> None:
    """Set each run's ``label`` for the plots of its group (after :func:`assign_groups`): the settings swept
    between its pipeline's runs there, as the runs table names them (``magnitude.sparsity=0.7``; shortened
    by MAX_LABEL_SETTINGS and MAX_LABEL_VALUE unless that leaves two runs alike), after the pipeline where the
    group holds several. A run left blank or alike another (nothing differs) keeps its name: pipeline/hash."""
    keys = swept(points)

    def label(p: RunPoint, cut: bool, several: bool) -> str:
        ks = keys[(p.pipeline, p.group)]
        text = settings_text(p, ks)
        if cut:
            values = [plain(p.settings.get(k)) for k in ks[:MAX_LABEL_SETTINGS]]
            text = ", ".join(f"{short(k)}={v if len(v) <= MAX_LABEL_VALUE else '…' + v[1 - MAX_LABEL_VALUE:]}"
                             for k, v in zip(ks, values)) + (", …" if len(ks) > MAX_LABEL_SETTINGS else "")
        return ": ".join(t for t in (p.pipeline if several else "", text if ks else "") if t)

    for group in group_by(points, "group").values():
        several = len({p.pipeline for p in group}) > 1
        for p in group:
            p.label = ""
        for cut in (True, False):  # short labels, else every swept setting in full, else the name
            texts = [label(p, cut, several) for p in group]
            alike = Counter(texts)
            for p, text in zip(group, texts):
                if not p.label and text and alike[text] == 1:
                    p.label = text
        for p in group:
            p.label = p.label or p.name


def short(key: str) -> str:
    """``pipeline.passes.obert.sparsity`` -> ``obert.sparsity``: the pass name says enough."""
    return key.removeprefix("pipeline.passes.")


def pareto_front(points: Sequence[RunPoint], cost: str) -> list[RunPoint]:
    """Runs no other run beats on both score and ``cost`` (an attribute: lower is better)."""
    have = [p for p in points if p.score is not None and getattr(p, cost) is not None]
    return [p for p in have if not any(q is not p and q.score >= p.score and getattr(q, cost) <= getattr(p, cost)
                                       and (q.score > p.score or getattr(q, cost) < getattr(p, cost)) for q in have)]


def group_by(points: Sequence[RunPoint], *attrs: str) -> dict[tuple[str, ...], list[RunPoint]]:
    """The runs keyed by their values of ``attrs`` (``"pipeline", "group"``), in first-seen order."""
    out: dict[tuple[str, ...], list[RunPoint]] = {}
    for p in points:
        out.setdefault(tuple(getattr(p, a) for a in attrs), []).append(p)
    return out


def settings_text(p: RunPoint, keys: Sequence[str]) -> str:
    """``obert.sparsity=0.7, ...``: a run's values of the swept ``keys`` (a dash when none)."""
    return ", ".join(f"{short(k)}={plain(p.settings.get(k))}" for k in keys) or DASH
