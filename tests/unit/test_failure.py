"""compresslab.failure: an exception with an empty message (KeyboardInterrupt, SystemExit, a bare
RuntimeError()) is never written as ``Type: `` with nothing after it, and a stopped run's sentence
names what stopped it, where, and how to resume."""

import ast
from pathlib import Path

import pytest

from compresslab.failure import error_text, stop_summary


@pytest.mark.parametrize("e, typed, text", [
    (RuntimeError("disk full"), True, "RuntimeError: disk full"),
    (RuntimeError("disk full"), False, "disk full"),
    (RuntimeError(), True, "RuntimeError"),
    (RuntimeError(), False, "RuntimeError"),   # the type stands in for the missing message
    (RuntimeError("  "), True, "RuntimeError"),
    (KeyboardInterrupt(), True, "KeyboardInterrupt"),
    (SystemExit(), True, "SystemExit")])
def test_error_text_never_ends_in_a_bare_colon(e, typed, text):
    assert error_text(e, typed=typed) == text


def test_error_text_limit_cuts_the_message_only():
    assert error_text(ValueError("x" * 50), limit=10) == "ValueError: " + "x" * 10


@pytest.mark.parametrize("err, api, said", [
    ({"type": "KeyboardInterrupt", "message": "", "step": "obert", "interrupted": True}, False,
     "Interrupted by Ctrl-C (SIGINT) in step obert. Rerun the same command to resume after the last finished step."),
    ({"type": "Terminated", "message": "stopped by signal 15 (SIGTERM)", "step": None, "stage": "eval",
      "after_steps": True, "interrupted": True}, False,
     "Interrupted by SIGTERM (a kill, or a scheduler's time limit) during eval, after all steps had finished. "
     "Rerun the same command to resume: the finished steps are kept."),
    ({"type": "KeyboardInterrupt", "message": "stopped", "step": "hawq"}, True,  # no `interrupted`: by type
     "Interrupted (KeyboardInterrupt: stopped) in step hawq. Call compresslab.compress again with the same "
     "output_dir to resume after the last finished step."),
    ({"type": "CheckpointError", "message": "cannot read x.", "step": None,
      "stage": "the restore of finished step obert", "interrupted": False}, False,
     "Error during the restore of finished step obert: CheckpointError: cannot read x. Rerun the same command to "
     "resume after the last finished step."),
    ({"type": "RuntimeError", "message": "", "step": None, "stage": "bench", "after_steps": True}, False,
     "Error during bench, after all steps had finished: RuntimeError (no message). Rerun the same command to "
     "resume: the finished steps are kept."),
    ({"type": "Terminated", "message": "stopped by signal 15 (SIGTERM)", "step": "obert", "interrupted": True,
      "error": "RuntimeError: disk full."}, False,  # a held signal raised as the step failed: both said
     "Interrupted by SIGTERM (a kill, or a scheduler's time limit) in step obert; it had also failed with "
     "RuntimeError: disk full. Rerun the same command to resume after the last finished step.")])
def test_stop_summary(err, api, said):
    assert stop_summary(err, api=api) == said


def test_a_plot_failing_without_a_message_is_named_by_its_type(monkeypatch):
    from compresslab.report import plots

    def broken(m):
        raise KeyError()

    monkeypatch.setattr(plots, "PLOTS", {"structure.png": broken})
    assert plots.draw_all({}) == ({}, {"structure.png": "KeyError"})


@pytest.mark.parametrize("behind", [RuntimeError("disk full"), RuntimeError()])
def test_an_interrupt_held_over_an_error_is_recorded_with_both(tmp_path, behind):
    """DeferredSignals raises a signal held when training failed as an interrupt (the stop asked for wins):
    the manifest says interrupted and keeps the error, its summary (the CLI's line, kept on the exception) too."""
    from compresslab.failure import held_over, recorded_summary
    from compresslab.manifest import RunManifest, read_json

    m = RunManifest.create(tmp_path, pipeline="int8")
    m.data["steps"] = [{"name": "obert", "index": 0, "status": "running"}]
    stop = KeyboardInterrupt()
    held_over(stop, behind)
    m.mark_failed(stop)
    err = read_json(tmp_path / "manifest.json")["error"]
    said = error_text(behind)
    assert (err["type"], err["interrupted"], err["error"]) == ("KeyboardInterrupt", True, said)
    assert err["summary"] == recorded_summary(stop) == (
        f"Interrupted by Ctrl-C (SIGINT) in step obert; it had also failed with {said}. Rerun the same command to "
        "resume after the last finished step.")


def test_a_plain_interrupt_or_error_records_no_second_error(tmp_path):
    from compresslab.manifest import RunManifest, read_json

    for e in (KeyboardInterrupt(), RuntimeError("disk full")):
        m = RunManifest.create(tmp_path)
        m.mark_failed(e)
        assert "error" not in read_json(tmp_path / "manifest.json")["error"]



# -- error_text is the one way an exception becomes text: nothing under compresslab/ or benchmarks/ writes
# f"{type(e).__name__}: {e}" (or its %-, .format or + forms) by hand, which reads "Type: " for an empty message.
REPO = Path(__file__).resolve().parents[2]
ERROR_TEXT_ITSELF = {"compresslab/failure.py"}


def _type_name_of(node: ast.AST) -> str | None:
    """``X`` of ``type(X).__name__`` or ``X.__class__.__name__``, X a plain name; None for anything else."""
    if not (isinstance(node, ast.Attribute) and node.attr == "__name__"):
        return None
    inner = node.value
    if isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name) and inner.func.id == "type" \
            and len(inner.args) == 1 and isinstance(inner.args[0], ast.Name):
        return inner.args[0].id
    if isinstance(inner, ast.Attribute) and inner.attr == "__class__" and isinstance(inner.value, ast.Name):
        return inner.value.id
    return None


def _builds_text(node: ast.AST) -> bool:
    """An f-string, a ``%`` or ``+``, ``"...".format(...)`` or a call given a format string first
    (``log.warning("%s: %s", ...)``)."""
    if isinstance(node, ast.JoinedStr) or isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        return True
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Attribute) and node.func.attr == "format":
            return True
        return bool(node.args) and (isinstance(node.args[0], ast.JoinedStr) or
                                    isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str))
    return False


def _exception_names(tree: ast.AST) -> set[str]:
    """Names bound to an exception: ``except ... as e``, or a parameter annotated as one (``e: BaseException``)."""
    names = {h.name for h in ast.walk(tree) if isinstance(h, ast.ExceptHandler) and h.name}
    for arg in (a for f in ast.walk(tree) if isinstance(f, ast.arguments) for a in f.args + f.kwonlyargs):
        if arg.annotation is not None and any(w in ast.unparse(arg.annotation) for w in ("Exception", "Error")):
            names.add(arg.arg)
    return names


def hand_formatted_errors(source: str) -> list[int]:
    """The lines where text is built from an exception's type name and the exception itself."""
    tree = ast.parse(source)
    exceptions = _exception_names(tree)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def the_exception_itself(n: ast.AST, name: str) -> bool:  # e, str(e), e.args: not the e inside type(e)
        p = parents.get(n)
        in_type = isinstance(p, ast.Call) and isinstance(p.func, ast.Name) and p.func.id == "type"
        in_class = isinstance(p, ast.Attribute) and p.attr == "__class__"
        return isinstance(n, ast.Name) and n.id == name and not in_type and not in_class

    found = []
    for node in ast.walk(tree):
        name = _type_name_of(node)
        if name not in exceptions:
            continue
        up = parents.get(node)  # climb through the text being built: its parts, tuples and call arguments
        while isinstance(up, (ast.FormattedValue, ast.JoinedStr, ast.BinOp, ast.Tuple, ast.Call)):
            if _builds_text(up) and any(the_exception_itself(n, name) for n in ast.walk(up)):
                found.append(node.lineno)
                break
            up = parents.get(up)
    return found


def test_no_module_formats_an_exception_by_hand():
    files = [p for d in ("compresslab", "benchmarks") for p in sorted((REPO / d).rglob("*.py"))
             if str(p.relative_to(REPO)) not in ERROR_TEXT_ITSELF]
    found = [f"{p.relative_to(REPO)}:{line}" for p in files for line in hand_formatted_errors(p.read_text())]
    assert not found, ("write these with compresslab.failure.error_text(e) (typed=False: the message alone; "
                       "limit=: cut it):\n" + "\n".join(found))


_IN_EXCEPT = "try:\n    f()\nexcept Exception as e:\n    x = {}"


@pytest.mark.parametrize("code, hand", [
    (_IN_EXCEPT.format('f"{type(e).__name__}: {e}"'), True),
    (_IN_EXCEPT.format('f"failed: {type(e).__name__}: {str(e)[:300]}"'), True),
    (_IN_EXCEPT.format('"%s: %s" % (type(e).__name__, e)'), True),
    (_IN_EXCEPT.format('"{}: {}".format(e.__class__.__name__, e)'), True),
    (_IN_EXCEPT.format('log.warning("failed: %s: %s", type(e).__name__, e)'), True),
    (_IN_EXCEPT.format('type(e).__name__ + ": " + str(e)'), True),
    ('def g(e: BaseException) -> str:\n    return f"{type(e).__name__}: {e}"', True),
    (_IN_EXCEPT.format('{"type": type(e).__name__, "message": str(e)}'), False),  # a record's fields
    (_IN_EXCEPT.format('f"{type(e).__name__} stops it"'), False),
    ('def g(m):\n    return f"got {type(m).__name__} {m!r}"', False)])  # a value, not an exception
def test_the_guard_finds_each_hand_formatted_form(code, hand):
    assert bool(hand_formatted_errors(code)) == hand
