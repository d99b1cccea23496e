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
     "resume: the finished steps are kept.")])
def test_stop_summary(err, api, said):
    assert stop_summary(err, api=api) == said


def test_a_plot_failing_without_a_message_is_named_by_its_type(monkeypatch):
    from compresslab.report import plots

    def broken(m):
        raise KeyError()

    monkeypatch.setattr(plots, "PLOTS", {"structure.png": broken})
    assert plots.draw_all({}) == ({}, {"structure.png": "KeyError"})
