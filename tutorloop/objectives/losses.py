"""Loss building blocks for the online trainer: SFT (F1), DPO / IPO / RPO (F3), REDI (F4) and
GKD-style JSD (F2); the policy-gradient losses (F5, F6) are in pg_losses.py.

Pure functions on tensors: no modules, no config, no reduction to a mean. Token-level objectives
return SUMS over valid units; the trainer divides each objective by its own global unit count
across micro-batches and ranks (METHODS.md 4.6; TRL issue #4719 shows why a per-micro-batch mean
is wrong under gradient accumulation). Shape suffixes: B batch, T time, V vocab, K teacher top-k,
K1 = K + 1 (top-k plus one tail bucket), N flattened positions. Equation numbers refer to
/work/shared/design/METHODS.md section 1 and to the cited papers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100
"""Label value that carries no loss (the transformers / TRL convention)."""

# TRL clamps the captured top-k log-mass at -1e-7 before log(1 - exp(.)) (trl/experimental/
# server_distillation/server_distillation_trainer.py::_add_tail_bucket, sdpo/loss_utils.py::
# add_tail_bucket): below float32's resolution near 1 the tail is noise, and the clamp bounds the
# 1/p_tail gradient amplification at 1e7. A saturated tail is then log(1e-7) ~ -16.1 for both sides.
_TAIL_LOG_MASS_MAX = -1e-7


def _masked(x: Tensor, mask: Tensor) -> Tensor:
    """x * mask with masked-out entries exactly 0, even where x is +-inf (0 * inf would be NaN)."""
    mask = mask.to(x.dtype)
    return torch.where(mask != 0, x * mask, torch.zeros_like(x))


# --------------------------------------------------------------------------------------------- #
# Log-probs
# --------------------------------------------------------------------------------------------- #


# Elements of logits normalized in one call by `token_logprobs` / `indexed_logprobs`: small
# batches take one vectorized call instead of one per row, while the transient [rows, T, V]
# temporaries stay near 64 MB (SmolLM2: 49k vocab x 512 tokens is 100 MB a row, so one row a call).
_NORMALIZE_NUMEL = 1 << 24


def token_logprobs(logits_B_T_V: Tensor, labels_B_T: Tensor, temperature: float = 1.0) -> Tensor:
    """log softmax(logits / temperature)[label] per position; labels of -100 give 0.

    Positions are already aligned: `logits_B_T_V[:, t]` scores `labels_B_T[:, t]` (shift before
    calling). Equivalent to `log_softmax(logits / tau).gather(labels)` but never holds a second
    [B, T, V] tensor: a few rows of the batch are normalized at a time (TRL `selective_log_softmax`).
    Half-precision logits are upcast per group of rows, so the result is float32 for them.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    valid_B_T = labels_B_T != IGNORE_INDEX
    if labels_B_T.shape[0] == 0:
        return torch.zeros(labels_B_T.shape, dtype=torch.promote_types(logits_B_T_V.dtype, torch.float32),
                           device=logits_B_T_V.device)
    safe_labels_B_T = labels_B_T.masked_fill(~valid_B_T, 0)
    rows = max(1, _NORMALIZE_NUMEL // max(1, logits_B_T_V[0].numel()))
    groups = [_picked_logprobs(logits_G_T_V, labels_G_T, temperature)
              for logits_G_T_V, labels_G_T in zip(logits_B_T_V.split(rows), safe_labels_B_T.split(rows), strict=True)]
    logp_B_T = groups[0] if len(groups) == 1 else torch.cat(groups)
    return logp_B_T.masked_fill(~valid_B_T, 0.0)


def _picked_logprobs(logits_G_T_V: Tensor, labels_G_T: Tensor, temperature: float) -> Tensor:
    if temperature != 1.0:
        logits_G_T_V = logits_G_T_V / temperature
    if logits_G_T_V.dtype in (torch.float32, torch.float64):
        # log_softmax(z)_y = z_y - logsumexp(z): keeps only the gathered values and one scalar
        # per position for backward instead of a full [T, V] log-softmax.
        picked_G_T = logits_G_T_V.gather(-1, labels_G_T.unsqueeze(-1)).squeeze(-1)
        return picked_G_T - torch.logsumexp(logits_G_T_V, dim=-1)
    # z_y - logsumexp(z) cancels catastrophically in bf16 (TRL notes the same), so normalize in
    # float32, a group of rows at a time.
    logp_G_T_V = F.log_softmax(logits_G_T_V.float(), dim=-1)
    return logp_G_T_V.gather(-1, labels_G_T.unsqueeze(-1)).squeeze(-1)


def indexed_logprobs(logits_B_T_V: Tensor, positions_B_N: Tensor, labels_B_N: Tensor) -> Tensor:
    """`token_logprobs` for targets read at given positions: entry n of row b is
    log softmax(logits_B_T_V[b, positions_B_N[b, n]])[labels_B_N[b, n]]; labels of -100 give 0.

    Several targets may share a position: with a shared prompt, the prompt's last token predicts
    the first token of both the chosen and the rejected completion. Each position is normalized
    once (logsumexp in float32) and no [B, N, V] copy of the logits is made.
    """
    valid_B_N = labels_B_N != IGNORE_INDEX
    safe_labels_B_N = labels_B_N.masked_fill(~valid_B_N, 0)
    rows = max(1, _NORMALIZE_NUMEL // max(1, logits_B_T_V[0].numel()))
    lse_B_T = torch.cat([torch.logsumexp(group.float(), dim=-1) for group in logits_B_T_V.split(rows)])
    batch_B_N = torch.arange(labels_B_N.shape[0], device=labels_B_N.device).unsqueeze(-1).expand_as(labels_B_N)
    picked_B_N = logits_B_T_V[batch_B_N, positions_B_N, safe_labels_B_N].float()
    logp_B_N = picked_B_N - lse_B_T.gather(1, positions_B_N)
    return logp_B_N.masked_fill(~valid_B_N, 0.0)


def sequence_logps(logp_B_T: Tensor, mask_B_T: Tensor) -> Tensor:
    """log pi(y | x) = sum_t m_t log pi(y_t | x, y_<t) per sequence (the F3 sequence score)."""
    return _masked(logp_B_T, mask_B_T).sum(dim=-1)


# --------------------------------------------------------------------------------------------- #
# F1: SFT
# --------------------------------------------------------------------------------------------- #


def sft_nll_sum(logp_B_T: Tensor, mask_B_T: Tensor, weight_B: Tensor | None = None) -> Tensor:
    """Numerator of F1: sum_{i,t} w_i * m_{i,t} * (-log pi(y_{i,t} | x_i, y_{i,<t})).

    `mask_B_T` may be boolean or hold per-token weights w_t (e.g. 0.1 on prompt tokens for
    Learn-to-Reason, METHODS B1). The caller divides by the global count of loss-bearing tokens.
    """
    nll_B = -_masked(logp_B_T, mask_B_T).sum(dim=-1)
    if weight_B is not None:
        nll_B = nll_B * weight_B.to(nll_B.dtype)
    return nll_B.sum()


# --------------------------------------------------------------------------------------------- #
# F3: DPO
# --------------------------------------------------------------------------------------------- #


def dpo_loss(
    policy_chosen_logp_B: Tensor,
    policy_rejected_logp_B: Tensor,
    ref_chosen_logp_B: Tensor,
    ref_rejected_logp_B: Tensor,
    *,
    beta: float,
) -> Tensor:
    """Sigmoid DPO loss per pair, Eq. 7 of Rafailov et al. 2023 (METHODS F3). Inputs are summed
    completion log-probs [B]; returns loss_B = -log sigmoid(beta * (chosen log-ratio - rejected
    log-ratio)), the same expression as TRL 1.16 `DPOTrainer._compute_loss`, loss_type "sigmoid"
    (label_smoothing 0, f_divergence_type "reverse_kl")."""
    logits_B = (policy_chosen_logp_B - ref_chosen_logp_B) - (policy_rejected_logp_B - ref_rejected_logp_B)
    return -F.logsigmoid(beta * logits_B)


def ipo_loss(policy_chosen_logp_B: Tensor, policy_rejected_logp_B: Tensor, ref_chosen_logp_B: Tensor,
             ref_rejected_logp_B: Tensor, chosen_len_B: Tensor, rejected_len_B: Tensor, *, beta: float) -> Tensor:
    """IPO per pair, Eq. 17 of Azar et al. 2023 with TRL 1.16's per-token averaging (`DPOTrainer.
    _compute_loss`, loss_type "ipo", confirmed with the IPO authors there):
    loss_B = (h_B - 1 / (2 beta))^2, h = (chosen log-ratio) / |y_w| - (rejected log-ratio) / |y_l|."""
    chosen_B = (policy_chosen_logp_B - ref_chosen_logp_B) / chosen_len_B.clamp(min=1)
    rejected_B = (policy_rejected_logp_B - ref_rejected_logp_B) / rejected_len_B.clamp(min=1)
    return (chosen_B - rejected_B - 1 / (2 * beta)).square()


def rpo_nll(policy_chosen_logp_B: Tensor, chosen_len_B: Tensor) -> Tensor:
    """RPO's stabilizer per pair (Pang et al. 2024; METHODS F3 `c_nll`): the chosen side's mean
    token NLL, -log pi(y_w | x) / |y_w|. TRL 1.16 adds the same term as loss_type "sft", averaged
    over the batch's chosen tokens instead: equal when the chosen lengths are."""
    return -policy_chosen_logp_B / chosen_len_B.clamp(min=1)


def redi_loss(policy_chosen_logp_B: Tensor, policy_rejected_logp_B: Tensor, chosen_len_B: Tensor,
              rejected_len_B: Tensor, *, alpha: float) -> Tensor:
    """REDI per pair (Xu et al. 2025 Eq. 5; METHODS F4; Tim-Siu/reinforcement-distillation
    dpo2_trainer.py loss_type "reinforce"): reference-free and asymmetric,
    loss_B = -log pi(y_w | x) / |y_w| + alpha * log pi(y_l | x) / |y_l|."""
    return (-policy_chosen_logp_B / chosen_len_B.clamp(min=1)
            + alpha * policy_rejected_logp_B / rejected_len_B.clamp(min=1))


def dpo_rewards(
    policy_chosen_logp_B: Tensor,
    policy_rejected_logp_B: Tensor,
    ref_chosen_logp_B: Tensor,
    ref_rejected_logp_B: Tensor,
    *,
    beta: float,
) -> tuple[Tensor, Tensor]:
    """Implicit DPO rewards r = beta * (log pi - log pi_ref) for (chosen_B, rejected_B), detached:
    they are metrics (TRL's rewards/chosen, rewards/rejected, margins, accuracies), not losses."""
    chosen_B = beta * (policy_chosen_logp_B - ref_chosen_logp_B)
    rejected_B = beta * (policy_rejected_logp_B - ref_rejected_logp_B)
    return chosen_B.detach(), rejected_B.detach()


# --------------------------------------------------------------------------------------------- #
# F2: generalized JSD, full vocabulary or top-k + tail
# --------------------------------------------------------------------------------------------- #


def _kl_terms(log_p_N_V: Tensor, log_q_N_V: Tensor) -> Tensor:
    """Pointwise p * (log p - log q), the summand of KL(p || q); 0 where p = 0 (log p = -inf).

    Same arithmetic as `F.kl_div(log_q, log_p, reduction="none", log_target=True)`, which TRL
    uses, but that returns NaN at log p = -inf (0 * -inf). Inputs are made finite before the
    product so neither the value nor its gradient can become NaN on empty (padded) support.
    """
    support_N_V = log_p_N_V > float("-inf")
    safe_log_p_N_V = torch.where(support_N_V, log_p_N_V, torch.zeros_like(log_p_N_V))
    safe_log_q_N_V = torch.where(support_N_V, log_q_N_V, torch.zeros_like(log_q_N_V))
    terms_N_V = safe_log_p_N_V.exp() * (safe_log_p_N_V - safe_log_q_N_V)
    return torch.where(support_N_V, terms_N_V, torch.zeros_like(terms_N_V))


def generalized_jsd(student_logp_N_V: Tensor, teacher_logp_N_V: Tensor, *, beta: float) -> Tensor:
    """Generalized Jensen-Shannon divergence per position, Eq. 1 of Agarwal et al. 2024 (GKD),
    METHODS F2, in the exact form of TRL 1.16 `GKDTrainer.generalized_jsd_loss`
    (trl/experimental/gkd/gkd_trainer.py):

        beta = 0:  KL(p_T || p_S)                               (forward KL, special-cased)
        beta = 1:  KL(p_S || p_T)                               (reverse KL, special-cased)
        else:      log M = logsumexp(log p_S + log(1 - beta), log p_T + log(beta))
                   JSD   = beta * KL(p_T || M) + (1 - beta) * KL(p_S || M)

    The endpoints are special-cased because the mixture formula is identically 0 there.
    Inputs are normalized log-probs [N, V] over any support (full vocabulary, or the K + 1
    buckets of `topk_with_tail`); entries of -inf mean zero mass. Returns jsd_N (summed over V).
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if beta == 0:
        return _kl_terms(teacher_logp_N_V, student_logp_N_V).sum(dim=-1)
    if beta == 1:
        return _kl_terms(student_logp_N_V, teacher_logp_N_V).sum(dim=-1)
    # Same tensor ops as TRL (beta as a tensor of the input dtype, log1p(-beta), log(beta)) so the
    # parity test can compare at float32 round-off.
    beta_t = torch.tensor(beta, dtype=student_logp_N_V.dtype, device=student_logp_N_V.device)
    # Buckets empty on both sides would give logsumexp(-inf, -inf), whose backward is NaN; they
    # carry no mass in either KL term, so any finite stand-in for the mixture there is exact.
    both_empty_N_V = (student_logp_N_V == float("-inf")) & (teacher_logp_N_V == float("-inf"))
    mixture_logp_N_V = torch.logsumexp(
        torch.stack([
            student_logp_N_V.masked_fill(both_empty_N_V, 0.0) + torch.log1p(-beta_t),
            teacher_logp_N_V.masked_fill(both_empty_N_V, 0.0) + torch.log(beta_t),
        ]),
        dim=0,
    )
    kl_teacher_N_V = _kl_terms(teacher_logp_N_V, mixture_logp_N_V)
    kl_student_N_V = _kl_terms(student_logp_N_V, mixture_logp_N_V)
    return (beta_t * kl_teacher_N_V + (1 - beta_t) * kl_student_N_V).sum(dim=-1)


def full_kl_sum(logits_B_T_V: Tensor, ref_logits_B_T_V: Tensor, mask_B_T: Tensor) -> Tensor:
    """sum_t mask_t * KL(pi_theta(.|t) || pi_ref(.|t)), exact over the vocabulary, at the N positions
    the mask keeps (the KL anchor of `sft` and `kd`). The reference side carries no gradient."""
    keep_B_T = mask_B_T != 0
    wide = torch.promote_types(logits_B_T_V.dtype, torch.float32)  # bf16 logits: softmax in fp32
    logp_N_V = torch.log_softmax(logits_B_T_V[keep_B_T].to(wide), dim=-1)
    ref_N_V = torch.log_softmax(ref_logits_B_T_V[keep_B_T].to(wide), dim=-1).detach()
    return (_kl_terms(logp_N_V, ref_N_V).sum(dim=-1) * mask_B_T[keep_B_T]).sum()


def _tail_logp(logp_N_K: Tensor) -> Tensor:
    """log(1 - sum_k exp(logp_k)) as an [N, 1] column: the mass outside the K listed buckets.

    The captured log-mass is clamped at -1e-7 (TRL's choice, see `_TAIL_LOG_MASS_MAX`), so a
    numerically exhausted tail is the finite log(1e-7) rather than -inf or NaN (float32 sums of
    a full softmax can exceed 1 by an ulp). log(-expm1(x)) stays accurate for every x <= -1e-7.
    """
    empty_N = (logp_N_K == float("-inf")).all(dim=-1, keepdim=True)
    # logsumexp over an all -inf row is -inf with a NaN backward; such a row's tail is all the
    # mass (log 1 = 0), so compute it on a finite stand-in and overwrite.
    log_mass_N = torch.logsumexp(logp_N_K.masked_fill(empty_N, 0.0), dim=-1, keepdim=True)
    log_mass_N = log_mass_N.clamp(max=_TAIL_LOG_MASS_MAX)
    tail_N = torch.log(-torch.expm1(log_mass_N))
    return tail_N.masked_fill(empty_N, 0.0)


def topk_with_tail(
    student_logp_N_V: Tensor, teacher_topk_ids_N_K: Tensor, teacher_topk_logp_N_K: Tensor
) -> tuple[Tensor, Tensor]:
    """Restrict student and teacher to the teacher's top-k support plus one tail bucket (METHODS
    F2 "top-k teacher"; TRL `_add_tail_bucket`). Returns (student_N_K1, teacher_N_K1): for bucket
    k < K the log-prob of token `teacher_topk_ids_N_K[:, k]`, and in bucket K the leftover mass
    log(1 - sum exp(top-k)) of each side. Without the tail, top-1 KL would be identically 0.

    Padding convention: a slot is padding when its id is negative (e.g. -1) OR its teacher
    log-prob is -inf; either is accepted, so a caller may pad with (-1, anything) or
    (any valid id, -inf). Padding has mass 0 on BOTH sides (-inf in both outputs); the student's
    real mass on that token, if any, stays in its tail bucket. Non-padding ids must be distinct.
    `teacher_topk_logp_N_K` are normalized log-probs of the teacher's full distribution (as
    served by vLLM `logprobs`/`prompt_logprobs`), not renormalized over the top-k.
    """
    pad_N_K, safe_ids_N_K = _topk_padding(teacher_topk_ids_N_K, teacher_topk_logp_N_K)
    return _with_tail(student_logp_N_V.gather(-1, safe_ids_N_K), teacher_topk_logp_N_K, pad_N_K)


def _topk_padding(teacher_topk_ids_N_K: Tensor, teacher_topk_logp_N_K: Tensor) -> tuple[Tensor, Tensor]:
    """(padding slots, ids safe to gather with) under `topk_with_tail`'s padding convention."""
    pad_N_K = (teacher_topk_ids_N_K < 0) | (teacher_topk_logp_N_K == float("-inf"))
    return pad_N_K, teacher_topk_ids_N_K.clamp(min=0).long()  # gather wants int64; servers may send int32


def _with_tail(student_topk_N_K: Tensor, teacher_topk_logp_N_K: Tensor, pad_N_K: Tensor) -> tuple[Tensor, Tensor]:
    """The K1 buckets of `topk_with_tail` from the student's log-probs already gathered at the ids."""
    neg_inf = float("-inf")
    student_topk_N_K = student_topk_N_K.masked_fill(pad_N_K, neg_inf)
    teacher_topk_N_K = teacher_topk_logp_N_K.to(student_topk_N_K.dtype).masked_fill(pad_N_K, neg_inf)
    student_N_K1 = torch.cat([student_topk_N_K, _tail_logp(student_topk_N_K)], dim=-1)
    teacher_N_K1 = torch.cat([teacher_topk_N_K, _tail_logp(teacher_topk_N_K)], dim=-1)
    return student_N_K1, teacher_N_K1


def opd_jsd_sum(
    student_logits_B_T_V: Tensor,
    teacher_topk_ids_B_T_K: Tensor,
    teacher_topk_logp_B_T_K: Tensor,
    mask_B_T: Tensor,
    *,
    beta: float,
    temperature: float = 1.0,
) -> Tensor:
    """KD / GKD numerator: sum_t m_t * JSD_beta(p_T^tau || p_S^tau) at position t (METHODS F2, GKD
    Eq. 1) over the teacher's top-k + tail support, temperature applied to both sides alike
    (TRL `generalized_jsd_loss` tempers both logits): see `temper_buckets`.

    Teacher log-probs are the scorer's at tau = 1 (METHODS 4.11.5). Only masked positions are
    normalized (in float32), and only the K listed log-probs are formed (z_k - logsumexp(z), no
    [N, V] log-softmax). Returns a scalar; the caller divides by the global count of masked
    positions (TRL GKD "batchmean" with labels == sum / number of unmasked tokens).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    keep_B_T = mask_B_T != 0
    logits_N_V = student_logits_B_T_V[keep_B_T].float()
    teacher_topk_logp_N_K = teacher_topk_logp_B_T_K[keep_B_T].float()
    pad_N_K, safe_ids_N_K = _topk_padding(teacher_topk_ids_B_T_K[keep_B_T], teacher_topk_logp_N_K)
    student_topk_N_K = logits_N_V.gather(-1, safe_ids_N_K) - torch.logsumexp(logits_N_V, dim=-1, keepdim=True)
    student_N_K1, teacher_N_K1 = _with_tail(student_topk_N_K, teacher_topk_logp_N_K, pad_N_K)
    student_N_K1, teacher_N_K1 = temper_buckets(student_N_K1, teacher_N_K1, temperature)
    jsd_N = generalized_jsd(student_N_K1, teacher_N_K1, beta=beta)
    return (jsd_N * mask_B_T[keep_B_T].to(jsd_N.dtype)).sum()


def temper_buckets(student_N_K1: Tensor, teacher_N_K1: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Both bucket distributions at temperature tau: log_softmax(log q / tau), the tail as one bucket.

    Served top-k gives no teacher logits outside the k, so the student is tempered the same way
    over the same buckets: student = teacher gives 0 for any k. Where the k cover the vocabulary
    (both tails at the clamp floor) the tails are dropped, and this is exactly TRL's dense
    log_softmax(z / tau) on both sides, since log_softmax(log_softmax(z) / tau) = log_softmax(z / tau).
    """
    if temperature == 1.0:
        return student_N_K1, teacher_N_K1
    floor = math.log(-math.expm1(_TAIL_LOG_MASS_MAX)) + 1e-3
    exhausted_N_1 = (student_N_K1[:, -1:] <= floor) & (teacher_N_K1[:, -1:] <= floor)

    def temper(log_q_N_K1: Tensor) -> Tensor:
        tail_N_1 = log_q_N_K1[:, -1:].masked_fill(exhausted_N_1, float("-inf"))
        return F.log_softmax(torch.cat([log_q_N_K1[:, :-1], tail_N_1], dim=-1) / temperature, dim=-1)

    return temper(student_N_K1), temper(teacher_N_K1)
