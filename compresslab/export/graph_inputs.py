"""Keep an exported graph's inputs the ones the model was exported with, used or not.

torch's ONNX exporters drop a graph input that no node reads. A ZipLM model whose every layer
lost all its heads (EmptySelfAttention) never reads ``attention_mask`` (in BERT only attention
does), so its graph came out with inputs ``input_ids, token_type_ids``: parity then fed the
export wrapper without a mask (``forward() missing ... 'attention_mask'``), and a deploy
consumer that feeds the tokenizer's three tensors would be refused by ORT/OpenVINO for an unknown
input. ONNX allows a graph input without consumers, so the dropped ones are declared again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import onnx
from onnx import TensorProto, helper


def restore_inputs(path: str | Path, names: Sequence[str]) -> list[str]:
    """Rewrite the ONNX file at ``path`` so its graph inputs are exactly ``names``, in that order.

    A missing name is declared as an unused ``int64 (batch, sequence)`` input (the dtype and
    dynamic axes every tokenizer tensor is exported with). Returns the names that were added
    (empty: the file is left untouched). Raises ``ValueError`` when the graph has an input that is
    not in ``names`` (not something this function can repair: the export is wrong).
    """
    model = onnx.load(str(path), load_external_data=False)
    have = {i.name: i for i in model.graph.input}
    extra = sorted(set(have) - set(names))
    if extra:
        raise ValueError(f"exported graph {path} has inputs {extra} that were not exported ({list(names)})")
    missing = [n for n in names if n not in have]
    if not missing:
        return []
    made = {n: helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in missing}
    ordered = [have.get(n) or made[n] for n in names]
    del model.graph.input[:]
    model.graph.input.extend(ordered)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return missing
