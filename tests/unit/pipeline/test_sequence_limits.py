"""Every setting that feeds the model sequences of some length is refused up front, by one check
(``models.loading.check_max_length``), when the length exceeds the model's position table: named
setting, the model's limit, what to set. A tiny BERT has max_position_embeddings=72.

The fault this guards: guided int8 timed at seq 128 on a 72-position model and failed late with ORT's
"EmbedLayerNormalization input index out of range"; the preflight only knew passes' ``seq`` /
``max_length`` attributes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compresslab.config import compose
from compresslab.models.tiny import tiny_model
from compresslab.pipeline.preflight import preflight
from compresslab.pipeline.settings import SettingsError

LIMIT = 72


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tiny")
    tiny_model("bert").config.save_pretrained(d)  # the preflight reads config.json alone
    assert json.loads((d / "config.json").read_text())["max_position_embeddings"] == LIMIT
    return d


def _cfg(model_dir: Path, tmp_path: Path, pipeline: str, *overrides: str):
    return compose([f"+pipeline={pipeline}", "debug=smoke", "model=local", f"model.source={model_dir}",
                    "task.max_length=32", "bench.deepsparse.enabled=false", f"paths.output_dir={tmp_path / 'out'}",
                    f"paths.cache_dir={tmp_path / 'cache'}", *overrides])


# (pipeline, overrides, the setting the error must name)
TOO_LONG = {
    "task max_length": ("int8", ["task.max_length=100"], "task.max_length=100"),
    "bench seq": ("int8", ["bench.shapes=[[1,128]]"], "bench.shapes seq=128"),
    "deepsparse seq": ("int8", ["bench.deepsparse.enabled=true", "bench.deepsparse.seq=128"],
                       "bench.deepsparse.seq=128"),
    "ziplm latency table seq": ("ziplm_2x", ["pipeline.passes.ziplm.seq=128"], "pipeline.passes.ziplm.seq=128"),
    "guided int8 latency seq": ("hawq_int8", ["pipeline.passes.int8.latency_seq=128"],
                                "pipeline.passes.int8.latency_seq=128"),
    "nbits latency table seq": ("hawq_w4", ["pipeline.passes.hawq.bits=null", "pipeline.passes.hawq.avg_bits=null",
                                            "pipeline.passes.hawq.latency_limit=0.8",
                                            "pipeline.passes.hawq.latency.seq=128"],
                                "pipeline.passes.hawq.latency.seq=128"),
}


@pytest.mark.parametrize("kind", list(TOO_LONG))
def test_a_sequence_setting_past_the_position_table_is_refused_by_the_preflight(kind, model_dir, tmp_path):
    pipeline, overrides, setting = TOO_LONG[kind]
    with pytest.raises(SettingsError) as err:
        preflight(_cfg(model_dir, tmp_path, pipeline, *overrides))
    msg = str(err.value)
    assert msg.startswith(f"{setting} exceeds the model's position table: max_position_embeddings={LIMIT}"), msg
    assert f"set {setting.split('=')[0]}<={LIMIT}" in msg
    # the same settings at the limit pass (the check is on the length, not the setting)
    at_limit = [o.replace("=128", f"={LIMIT}").replace("=100", f"={LIMIT}").replace(",128]", f",{LIMIT}]")
                for o in overrides]
    preflight(_cfg(model_dir, tmp_path, pipeline, *at_limit))


@pytest.mark.parametrize("pipeline, overrides", [
    ("int8", ["pipeline.passes.int8.latency_seq=128"]),  # fp32_fallback none: nothing is timed
    ("hawq_w4", ["pipeline.passes.hawq.latency.seq=128"]),  # no latency_limit: no latency table
])
def test_a_length_the_run_never_feeds_is_not_refused(pipeline, overrides, model_dir, tmp_path):
    preflight(_cfg(model_dir, tmp_path, pipeline, *overrides))


# ------------------------------------------------ the same check where a direct caller runs without a preflight


def test_guided_int8_pass_refuses_before_any_work(tmp_path):
    from compresslab.passes.ort_int8_dynamic import OrtInt8Dynamic
    from compresslab.types import OnnxModel

    tiny_model("bert").config.save_pretrained(tmp_path)
    p = OrtInt8Dynamic(fp32_fallback="guided", latency_seq=128)
    assert p.sequence_lengths() == {"latency_seq": 128}
    assert OrtInt8Dynamic(latency_seq=128).sequence_lengths() == {}
    with pytest.raises(ValueError, match=rf"latency_seq=128 exceeds.*max_position_embeddings={LIMIT}.*<={LIMIT}"):
        p._guided(tmp_path / "missing.onnx", tmp_path / "dst.onnx", OnnxModel(tmp_path, tmp_path / "missing.onnx"),
                  ctx=None)  # ctx unused: the check comes first


def test_benchmark_flops_and_latency_table_use_the_shared_check():
    from compresslab.bench.flops import max_seq_len, theoretical_flops
    from compresslab.bench.latency_table import TableSettings, build_latency_table
    from compresslab.measure import benchmark

    model = tiny_model("bert")
    with pytest.raises(ValueError, match=rf"model 'm': shapes seq=128 exceeds.*set shapes seq<={LIMIT}"):
        benchmark({"m": model}, shapes=[(1, 128)], threads=1)
    with pytest.raises(ValueError, match=rf"seq_len=100 exceeds.*set seq_len<={LIMIT}"):
        theoretical_flops(model, 100)
    with pytest.raises(ValueError, match=rf"latency table seq=128 exceeds.*<={LIMIT}"):
        build_latency_table(model, "no-such.onnx", TableSettings(seq=128))
    assert max_seq_len(model) == LIMIT


@pytest.mark.parametrize("model_type, pad, limit", [("roberta", 1, 512), ("xlm-roberta", 1, 512),
                                                    ("camembert", 1, 512), ("roberta", 0, 513), ("bert", 0, 514)])
def test_position_limit_counts_the_padding_offset(model_type, pad, limit):
    from compresslab.models.loading import position_limit

    assert position_limit({"model_type": model_type, "max_position_embeddings": 514, "pad_token_id": pad}) == limit
