"""compresslab.failure: an exception with an empty message (KeyboardInterrupt, SystemExit, a bare
RuntimeError()) is never written as ``Type: `` with nothing after it, and a stopped run's sentence
names what stopped it, where, and how to resume."""

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
