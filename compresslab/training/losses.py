"""Loss plug-ins for the one training loop: task loss, logit KD, hidden/attention KD, embedding KD.

Each plug-in says which model outputs it needs (hidden states, attentions, a teacher) so the
loop asks the models for exactly that, and returns a scalar for one batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The batch keys a Hugging Face encoder takes as inputs (labels and the rest stay out of forward).
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

# ``loss_fn(model, batch) -> scalar``: a whole-model loss, e.g. the empirical Fisher's.
LossFn = Callable[[nn.Module, dict[str, Tensor]], Tensor]


class LossPlugin(Protocol):
    """A loss term. ``needs_qkv`` (optional, default False) asks the loop for every layer's q/k/v
    projection outputs as ``outputs.qkv``: a list over layers of ``(q, k, v)``, each ``(B, H, T, d_h)``."""

    weight: float
    needs_teacher: bool
    needs_hidden: bool
    needs_attentions: bool

    def __call__(self, student: Any, teacher: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...


def mean_pool(last_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mask-aware mean over tokens: (B, T, D), (B, T) -> (B, D). The sentence-transformers pooling."""
    m = attention_mask.unsqueeze(-1).to(last_hidden.dtype)
    return (last_hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


@dataclass
class TaskLoss:
    """Cross-entropy on labels, or MSE when the head has a single output (regression)."""

    weight: float = 1.0
    needs_teacher: bool = False
    needs_hidden: bool = False
    needs_attentions: bool = False

    def __call__(self, student, teacher, batch):
        logits = student.logits
        labels = batch["labels"]
        if logits.shape[-1] == 1:
            return F.mse_loss(logits.squeeze(-1), labels.float())
        return F.cross_entropy(logits, labels.long())


@dataclass
class LogitKD:
    """T² · mean over rows of KL(softmax(z_T/T) ‖ softmax(z_S/T)) (sparseml form); MSE for regression."""

    temperature: float = 2.0
    weight: float = 1.0
    needs_teacher: bool = True
    needs_hidden: bool = False
    needs_attentions: bool = False

    def __call__(self, student, teacher, batch):
        zs, zt = student.logits, teacher.logits.detach()
        if zs.shape[-1] == 1:
            return F.mse_loss(zs, zt)
        t = self.temperature
        return F.kl_div(F.log_softmax(zs / t, -1), F.log_softmax(zt / t, -1), log_target=True,
                        reduction="batchmean") * t * t


def _layer_map(n_student: int, n_teacher: int) -> list[int]:
    """TinyBERT's uniform map g(m) = m·L_T/L_S over hidden-state indices (0 = embeddings)."""
    return [round(m * n_teacher / n_student) for m in range(n_student + 1)]


@dataclass
class HiddenMSE:
    """Σ_m MSE(H_S^m, H_T^{g(m)}) over embeddings and every layer output (same width only)."""

    weight: float = 1.0
    needs_teacher: bool = True
    needs_hidden: bool = True
    needs_attentions: bool = False

    def __call__(self, student, teacher, batch):
        hs, ht = student.hidden_states, teacher.hidden_states
        mapping = _layer_map(len(hs) - 1, len(ht) - 1)
        mask = batch["attention_mask"].unsqueeze(-1).to(hs[0].dtype)
        denom = mask.sum() * hs[0].shape[-1]
        return sum(((hs[m] - ht[g].detach()) ** 2 * mask).sum() / denom for m, g in enumerate(mapping))


@dataclass
class AttentionKD:
    """(1/H) Σ_heads MSE of attention maps for mapped layers; layers whose head counts differ are skipped.

    HF returns post-softmax probabilities; TinyBERT used pre-softmax scores. Probabilities are
    bounded and need no masking trick, which is why we use them.
    """

    weight: float = 1.0
    needs_teacher: bool = True
    needs_hidden: bool = False
    needs_attentions: bool = True

    def __call__(self, student, teacher, batch):
        a_s, a_t = student.attentions, teacher.attentions
        mapping = _layer_map(len(a_s), len(a_t))[1:]
        terms = [F.mse_loss(a_s[m], a_t[g - 1].detach()) for m, g in enumerate(mapping)
                 if a_s[m] is not None and a_s[m].shape == a_t[g - 1].shape]
        if not terms:
            return a_s[0].new_zeros(()) if a_s and a_s[0] is not None else torch.zeros(())
        return torch.stack(terms).mean()


@dataclass
class EmbeddingKD:
    """Distil mean-pooled sentence embeddings: 1 − cosine (default) or MSE."""

    kind: str = "cosine"
    weight: float = 1.0
    needs_teacher: bool = True
    needs_hidden: bool = False
    needs_attentions: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("cosine", "mse"):
            raise ValueError(f"EmbeddingKD.kind={self.kind!r}; allowed: 'cosine', 'mse'")

    def __call__(self, student, teacher, batch):
        am = batch["attention_mask"]
        es = mean_pool(student.last_hidden_state, am)
        et = mean_pool(teacher.last_hidden_state.detach(), am)
        if self.kind == "mse":
            return F.mse_loss(es, et)
        return (1 - F.cosine_similarity(es, et, dim=-1)).mean()


def _depth_ratio(n_student: int, n_teacher: int) -> int:
    """``r = L_T / L_S``; ValueError unless the teacher's depth is a multiple of the student's."""
    if n_teacher % n_student:
        raise ValueError(f"the teacher's depth ({n_teacher}) must be a multiple of the student's ({n_student})")
    return n_teacher // n_student


def _bibert_layer_map(n_student: int, n_teacher: int) -> list[int]:
    """BiBERT's map: student layer ``l`` (0-based) reads teacher layer ``l·r + r − 1``, ``r = L_T / L_S``."""
    r = _depth_ratio(n_student, n_teacher)
    return [l * r + r - 1 for l in range(n_student)]


def _unit(x: Tensor) -> Tensor:
    """``x / ‖x‖_F`` with one norm over the whole tensor (batch, heads and tokens: §3.6 "norm scope")."""
    return x / torch.linalg.vector_norm(x).clamp_min(1e-12)


@dataclass
class DirectionMatchingKD:
    """BiBERT's DMD (ALGORITHMS.md §3.3): ``Σ_l Σ_{F∈{Q,K,V}} ‖P̃_F^S − P̃_F^T‖_F`` with
    ``P_F = F·Fᵀ`` per head (``(B, H, T, T)``; the ``1/√d_h`` cancels under the normalization) and
    ``P̃ = P/‖P‖_F`` over the whole tensor. An L2 norm, not squared; each term lies in [0, 2].
    Computed on the *pre-sign* projections (the loop's ``qkv``); no gradient reaches the teacher.
    Padded tokens are not masked, as in the reference (its ``≤ −100`` zeroing never fires on F·Fᵀ)."""

    weight: float = 1.0
    needs_teacher: bool = True
    needs_hidden: bool = False
    needs_attentions: bool = False
    needs_qkv: bool = True

    def __call__(self, student, teacher, batch):
        qs, qt = student.qkv, teacher.qkv
        terms = []
        for l, g in enumerate(_bibert_layer_map(len(qs), len(qt))):
            for fs, ft in zip(qs[l], qt[g]):
                ps = _unit(torch.matmul(fs, fs.transpose(-1, -2)))
                ft = ft.detach()
                pt = _unit(torch.matmul(ft, ft.transpose(-1, -2)))
                terms.append(torch.linalg.vector_norm(ps - pt))
        return torch.stack(terms).sum()


@dataclass
class NormalizedHiddenKD:
    """BiBERT's hidden-state term (§3.3): ``Σ_{l=0..L} ‖h_S^l/‖h_S^l‖_F − h_T^{l·r}/‖h_T^{l·r}‖_F‖_F``
    over the embedding output (l = 0) and every layer output, one norm per whole tensor."""

    weight: float = 1.0
    needs_teacher: bool = True
    needs_hidden: bool = True
    needs_attentions: bool = False

    def __call__(self, student, teacher, batch):
        hs, ht = student.hidden_states, teacher.hidden_states
        ls = len(hs) - 1
        r = _depth_ratio(ls, len(ht) - 1)
        return sum(torch.linalg.vector_norm(_unit(hs[l]) - _unit(ht[l * r].detach())) for l in range(ls + 1))


@dataclass
class SoftCrossEntropyKD:
    """BiBERT's prediction term (§3.3): ``mean over (batch × classes) of −softmax(z_T) ⊙ log_softmax(z_S)``
    (T = 1; the mean also divides by the number of classes, as the reference does) plus
    ``label_weight · CE(z_S, y)`` (0.5 in the reference); ``MSE(z_S, z_T)`` for regression."""

    label_weight: float = 0.5
    weight: float = 1.0
    needs_teacher: bool = True
    needs_hidden: bool = False
    needs_attentions: bool = False

    def __call__(self, student, teacher, batch):
        zs, zt = student.logits, teacher.logits.detach()
        if zs.shape[-1] == 1:
            return F.mse_loss(zs, zt)
        soft = (-torch.softmax(zt, -1) * F.log_softmax(zs, -1)).mean()
        if self.label_weight:
            soft = soft + self.label_weight * F.cross_entropy(zs, batch["labels"].long())
        return soft


def build_losses(hardness: float = 0.0, temperature: float = 2.0, hidden_weight: float = 0.0,
                 attention_weight: float = 0.0, embedding: bool = False) -> list[Any]:
    """The usual combination: (1−h)·task + h·logit KD (+ optional hidden/attention terms)."""
    if not 0.0 <= hardness <= 1.0:
        raise ValueError(f"hardness={hardness} must be in [0, 1]")
    if embedding:
        return [EmbeddingKD()]
    losses: list[Any] = []
    if hardness < 1.0:
        losses.append(TaskLoss(weight=1.0 - hardness))
    if hardness > 0.0:
        losses.append(LogitKD(temperature=temperature, weight=hardness))
    if hidden_weight > 0:
        losses.append(HiddenMSE(weight=hidden_weight))
    if attention_weight > 0:
        losses.append(AttentionKD(weight=attention_weight))
    return losses


def task_loss(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Mean task loss of one batch (CE, or MSE for one output): the empirical Fisher's loss.

    Not the KD loss: at the start of pruning the student equals the teacher, so the KD gradient
    is exactly zero and its Fisher would be ``damp*I`` (magnitude pruning in disguise).
    """
    out = model(**{k: v for k, v in batch.items() if k in MODEL_INPUTS}, return_dict=True)
    return TaskLoss()(out, None, batch)


def teacher_kl_loss(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Mean KL(p_teacher ‖ p_model) of one batch with the model's own detached logits as the teacher.

    Value and gradient are 0 (the model is its own teacher), but the Hessian by double backprop is
    ``(1/B) Σ_n J_nᵀ (diag(p_n) − p_n p_nᵀ) J_n`` (``J_n`` = ∂logits_n/∂θ, ``p_n`` = softmax): the
    generalized Gauss-Newton matrix, equal to the Fisher of the model's predictive distribution.
    It is positive semi-definite and is the second-order term of the output KL that a weight
    perturbation δ (e.g. quantization noise) causes: KL ≈ ½ δᵀHδ. The task loss's Hessian adds
    ``Σ_c (p_c − y_c) ∇²z_c``, which at a well-fit point is small and indefinite. For a single output
    (regression) the loss is MSE to the detached output, whose Hessian is ``(2/B) Σ_n J_nᵀJ_n``.
    """
    out = model(**{k: v for k, v in batch.items() if k in MODEL_INPUTS}, return_dict=True)
    z = out.logits
    if z.shape[-1] == 1:
        return F.mse_loss(z, z.detach())
    target = F.log_softmax(z.detach(), -1)
    return F.kl_div(F.log_softmax(z, -1), target, log_target=True, reduction="batchmean")
