"""compresslab.failure: an exception with an empty message (KeyboardInterrupt, SystemExit, a bare
RuntimeError()) is never written as ``Type: `` with nothing after it, and a stopped run's sentence
names what stopped it, where, and how to resume."""

import ast
from pathlib import Path

import pytest

from compresslab.failure import clipped, error_text, stop_summary


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
    assert error_text(ValueError("x" * 50), limit=10) == "ValueError: " + "x" * 9 + "…"


TORCH_SAID = ("Weights only load failed. In PyTorch 2.6, we changed the default value of the `weights_only` "
              "argument in `torch.load` from `False` to `True`. Re-running `torch.load` with `weights_only` set to "
              "`False` will likely succeed, but it can result in arbitrary code execution.")


@pytest.mark.parametrize("limit", [20, 45, 100, 150, len(TORCH_SAID) - 1])
def test_a_shortened_message_keeps_its_start_and_whole_words(limit):
    """Trial 48, 9: the pickle refusal quoted torch's message from its tail and began mid-word ("ion. Do it only
    if..."). A shortened message keeps its start, ends at a word boundary with "…", within the limit."""
    short = clipped(TORCH_SAID, limit)
    assert short.endswith("…") and len(short) <= limit and TORCH_SAID.startswith(short[:-1])
    assert TORCH_SAID[len(short) - 1] == " "  # the next character: the cut fell between words
    assert error_text(RuntimeError(TORCH_SAID), typed=False, limit=limit) == short
    assert clipped(TORCH_SAID, len(TORCH_SAID)) == TORCH_SAID and clipped(" ok ", None) == "ok"


def test_terminal_colour_codes_are_left_out():
    assert error_text(RuntimeError("\x1b[1mdo it only if\x1b[0m you trust it"), typed=False) == "do it only if you trust it"


def test_one_long_token_is_cut_inside_it():
    assert clipped("see /" + "a" * 80, 20) == "see /" + "a" * 14 + "…"


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


TEXT_ATTRS = {"args", "detail", "message", "msg", "stderr", "output"}  # where exceptions keep their words


def sliced_exception_texts(source: str) -> list[int]:
    """The lines that shorten a caught exception's text by slicing (``str(e)[:300]``, ``str(e).strip()[-300:]``,
    ``e.args[0][:80]``) instead of :func:`compresslab.failure.clipped` (error_text's ``limit=``)."""
    tree = ast.parse(source)
    exceptions = _exception_names(tree)

    def its_text(n: ast.AST) -> bool:  # str(e), e.args, e.detail, ...: not e.object (a decode error's bytes)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("str", "repr"):
            return any(isinstance(a, ast.Name) and a.id in exceptions for a in n.args)
        return isinstance(n, ast.Attribute) and n.attr in TEXT_ATTRS and isinstance(n.value, ast.Name) \
            and n.value.id in exceptions

    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Subscript)
            and isinstance(node.slice, ast.Slice) and any(its_text(n) for n in ast.walk(node.value))]


@pytest.mark.parametrize("code, sliced", [
    (_IN_EXCEPT.format('f"torch said: {str(e)[-300:]}"'), True),
    (_IN_EXCEPT.format('str(e).strip()[:400]'), True),
    (_IN_EXCEPT.format('e.args[0][:80]'), True),
    ('def g(err: Exception):\n    return str(err)[:10]', True),
    (_IN_EXCEPT.format('error_text(e, typed=False, limit=300)'), False),
    (_IN_EXCEPT.format('e.detail[-400:]'), True),
    (_IN_EXCEPT.format('names[:3]'), False),
    (_IN_EXCEPT.format('e.object[e.start:e.end]'), False)])  # a decode error's bytes, not its words
def test_the_slice_guard_finds_each_form(code, sliced):
    assert bool(sliced_exception_texts(code)) == sliced


def test_no_module_slices_an_exception_text():
    """Every shortened quote of a caught exception goes through one helper, which keeps the message's start."""
    files = [p for p in sorted((REPO / "compresslab").rglob("*.py")) if str(p.relative_to(REPO)) not in
             ERROR_TEXT_ITSELF]
    found = [f"{p.relative_to(REPO)}:{line}" for p in files for line in sliced_exception_texts(p.read_text())]
    assert not found, "shorten these with compresslab.failure.clipped / error_text(e, limit=N):\n" + "\n".join(found)
