"""A multirun's jobs get the checks that need the data or the model before the first job starts: a bad value in a
later job (a block size the Linears' shapes refuse, a data file without its column) used to stop that job only
after the earlier ones had run to the end."""

from __future__ import annotations

import pytest

from compresslab import cli

case = pytest.mark.case


def _smoke(tmp_path, data_root) -> list[str]:
    return ["debug=smoke", "bench=off", f"data.root={data_root}", f"paths.output_dir={tmp_path}/out",
            f"paths.cache_dir={tmp_path}/cache"]


@case(name="-m +pipeline=hawq_w4 pipeline.passes.hawq.block_size=64,256 (256 does not divide K=384)", kind=1,
      expected="exit 2 naming the job's block size, before any job started")
def test_a_later_jobs_shape_error_is_found_before_any_job(cli_refusal, expect_clear, tmp_path, data_root):
    argv = ["+pipeline=hawq_w4", "pipeline.passes.hawq.block_size=64,256", *_smoke(tmp_path, data_root)]
    expect_clear(cli_refusal(lambda: cli.check_multirun(argv)),
                 match=r"block_size=256 does not divide its input dimension K=384.*multirun job with "
                       r"pipeline\.passes\.hawq\.block_size=256; no job was started")
    assert not (tmp_path / "out").exists()


@case(name="-m task=generic task.generic.dev=ok.csv,no_text.csv", kind=1,
      expected="exit 2 naming the file's missing column, before any job started")
def test_a_later_jobs_data_error_is_found_before_any_job(cli_refusal, expect_clear, tmp_path, data_root):
    rows = "\n".join(f"{'good' if i % 2 else 'bad'} film {i},{i % 2}" for i in range(40))
    (tmp_path / "train.csv").write_text("text,label\n" + rows + "\n")
    (tmp_path / "ok.csv").write_text("text,label\n" + rows + "\n")
    (tmp_path / "no_text.csv").write_text("sentence,label\n" + rows + "\n")
    argv = ["+pipeline=int8", "task=generic", f"task.generic.train={tmp_path}/train.csv",
            f"task.generic.dev={tmp_path}/ok.csv,{tmp_path}/no_text.csv", *_smoke(tmp_path, data_root)]
    expect_clear(cli_refusal(lambda: cli.check_multirun(argv)), match=r"no_text\.csv.*no job was started")
    assert not (tmp_path / "out").exists()


def test_a_good_sweep_passes_the_model_checks(tmp_path, data_root, capsys):
    cli.check_multirun(["+pipeline=hawq_w4", "pipeline.passes.hawq.block_size=64,128", *_smoke(tmp_path, data_root)])
    assert capsys.readouterr().err == ""
    assert not (tmp_path / "out").exists()  # checked, nothing written
