"""Policy-gradient losses on the policy's own samples: the PPO-clip surrogate (F5), on-policy
distillation with the teacher's log-ratio as advantage (F6), and per-token KL estimates (k2, k3);
and on tokens it did not sample (teacher guidance in the group, F7), the shaped off-policy term.

Pure functions on [B, T] tensors of sampled-token log-probs; they return SUMS over masked tokens
and the trainer divides by the step's global token count ("token-mean", METHODS §4.6). Equation
names refer to /work/shared/design/METHODS.md section 1.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _finite_where(keep_B_T: Tensor, x_B_T: Tensor) -> Tensor:
    """x with off-mask entries 0: padding may hold -inf, and exp(-inf - -inf) = NaN would reach the
    gradient through a product even though the masked sum drops it."""
    return torch.where(keep_B_T, x_B_T, torch.zeros_like(x_B_T))


def clipped_pg_sum(logp_B_T: Tensor, behavior_logp_B_T: Tensor, advantage_B_T: Tensor, mask_B_T: Tensor, *,
                   clip_low: float, clip_high: float) -> tuple[Tensor, Tensor]:
    """PPO-clip surrogate (METHODS F5; Schulman et al. 2017 Eq. 7; verl core_algos.compute_policy_loss):

        rho_t  = exp(log pi_theta(y_t) - sg(log pi_old(y_t)))
        loss_t = max(-A_t rho_t, -A_t clip(rho_t, 1 - clip_low, 1 + clip_high))
        loss   = sum_t m_t loss_t

    Returns (loss_sum, number of masked tokens whose clipped branch was taken), the latter detached.
    At rho = 1 the gradient w.r.t. log pi_theta(y_t) is -m_t A_t.
    """
    keep_B_T = mask_B_T != 0
    logp_B_T = _finite_where(keep_B_T, logp_B_T)
    behavior_B_T = _finite_where(keep_B_T, behavior_logp_B_T).detach()
    advantage_B_T = _finite_where(keep_B_T, advantage_B_T).detach()
    ratio_B_T = torch.exp(logp_B_T - behavior_B_T)
    unclipped_B_T = -advantage_B_T * ratio_B_T
    clipped_B_T = -advantage_B_T * ratio_B_T.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss_B_T = torch.maximum(unclipped_B_T, clipped_B_T)
    weight_B_T = mask_B_T.to(loss_B_T.dtype)
    clipped_count = ((clipped_B_T > unclipped_B_T) & keep_B_T).sum().detach()
    return (loss_B_T * weight_B_T).sum(), clipped_count


def shaped_off_policy_pg_sum(logp_B_T: Tensor, advantage_B_T: Tensor, mask_B_T: Tensor, *,
                              gamma: float) -> Tensor:
    """The off-policy term of mixed on/off-policy GRPO (METHODS F7; AMPO and LUFFY's
    `off_policy_reshape="p_div_p_0.1"`), for tokens no policy sampled (teacher guidance):

        p_t    = pi_theta(y_t) = exp(log pi_theta(y_t))          (with gradient)
        loss_t = -A_t f(p_t),   f(p) = p / (p + gamma)
        loss   = sum_t m_t loss_t

    No ratio (there is no behaviour policy) and no clip. d loss_t / d log pi_theta(y_t) =
    -A_t gamma p_t / (p_t + gamma)^2, the unshaped -A_t p_t's gradient times gamma / (p_t + gamma)^2:
    up to 1/gamma on tokens the policy finds unlikely, less on likely ones (LUFFY's "policy
    shaping", Yan et al. 2025), so the teacher's rare tokens are not drowned out.
    """
    keep_B_T = mask_B_T != 0
    p_B_T = torch.exp(_finite_where(keep_B_T, logp_B_T))
    advantage_B_T = _finite_where(keep_B_T, advantage_B_T).detach()
    loss_B_T = -advantage_B_T * p_B_T / (p_B_T + gamma)
    return (loss_B_T * mask_B_T.to(loss_B_T.dtype)).sum()


def opd_pg_sum(logp_B_T: Tensor, behavior_logp_B_T: Tensor, teacher_logp_B_T: Tensor, mask_B_T: Tensor, *,
               clip_low: float = 0.2, clip_high: float = 0.2) -> tuple[Tensor, Tensor]:
    """On-policy distillation as policy gradient (METHODS F6; tinker-cookbook
    `distillation/train_on_policy.py::incorporate_kl_penalty`, kl_penalty_coef 1, no discount):

        A_t = sg(log pi_T(y_t) - log pi_old(y_t))     (a negative per-token reverse-KL sample)

    trained with the PPO-clip surrogate of `clipped_pg_sum`. Returns (loss_sum, kl_sum) with
    kl_sum = sum_t m_t (log pi_old - log pi_T), the k1 estimate of KL(pi_old || pi_T), detached.
    With teacher == behaviour, A = 0 and the loss is exactly 0.
    """
    keep_B_T = mask_B_T != 0
    advantage_B_T = (_finite_where(keep_B_T, teacher_logp_B_T) - _finite_where(keep_B_T, behavior_logp_B_T)).detach()
    loss_sum, _ = clipped_pg_sum(logp_B_T, behavior_logp_B_T, advantage_B_T, mask_B_T,
                                 clip_low=clip_low, clip_high=clip_high)
    return loss_sum, (-advantage_B_T * keep_B_T).sum()


def kl_estimate_sum(logp_B_T: Tensor, ref_logp_B_T: Tensor, mask_B_T: Tensor, *, estimator: str) -> Tensor:
    """sum_t m_t k(u_t), u = log pi_theta(y_t) - log pi_ref(y_t) on the policy's own samples
    (METHODS F6; Schulman, "Approximating KL divergence", 2020; verl `kl_penalty` mse / low_var_kl):

        k2 = u^2 / 2                 (its gradient is the unbiased reverse-KL gradient on-policy)
        k3 = exp(-u) - 1 + u         (>= 0, low variance; a biased gradient when used as a loss)
    """
    keep_B_T = mask_B_T != 0
    u_B_T = _finite_where(keep_B_T, logp_B_T) - _finite_where(keep_B_T, ref_logp_B_T).detach()
    if estimator == "k2":
        k_B_T = 0.5 * u_B_T.square()
    elif estimator == "k3":
        k_B_T = torch.expm1(-u_B_T) + u_B_T
    else:
        raise ValueError(f"estimator must be k2 or k3, got {estimator!r}")
    return (k_B_T * mask_B_T.to(k_B_T.dtype)).sum()
