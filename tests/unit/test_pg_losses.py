"""Policy-gradient and pair losses by hand: PPO-clip (F5), OPD as PG (F6), k2 / k3 (F6), IPO and
RPO's NLL (F3), REDI (F4). Float64, so the tests check the formula, not the rounding."""

from __future__ import annotations

import math

import torch

from tutorloop.objectives.losses import ipo_loss, redi_loss, rpo_nll
from tutorloop.objectives.pg_losses import clipped_pg_sum, kl_estimate_sum, opd_pg_sum

LN = math.log
NEG_INF = float("-inf")
f64 = torch.float64


def _t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=f64)


# ------------------------------------------------------------------------------------------------
# opd_pg_sum (F6)
# ------------------------------------------------------------------------------------------------


def test_opd_pg_by_hand_and_gradient_is_minus_advantage():
    """behavior = student (ratio 1): A = teacher - behavior = [[0.5, -1.0, 2.0]], mask [[1, 1, 0]].
    loss_sum = -(0.5 - 1.0) = 0.5; kl_sum (k1, behavior - teacher) = -0.5 + 1.0 = 0.5;
    d loss / d student_logp = -m * A = [[-0.5, 1.0, 0]]. Behavior and teacher get no gradient."""
    behavior = _t([[-1.0, -2.0, -3.0]]).requires_grad_()
    teacher = _t([[-0.5, -3.0, -1.0]]).requires_grad_()
    student = behavior.detach().clone().requires_grad_()
    mask = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    loss_sum, kl_sum = opd_pg_sum(student, behavior, teacher, mask)
    torch.testing.assert_close(loss_sum, _t(0.5))
    torch.testing.assert_close(kl_sum, _t(0.5))
    assert not kl_sum.requires_grad
    g_student, g_behavior, g_teacher = torch.autograd.grad(
        loss_sum, (student, behavior, teacher), allow_unused=True)
    torch.testing.assert_close(g_student, _t([[-0.5, 1.0, 0.0]]))
    assert g_behavior is None and g_teacher is None


def test_opd_pg_ratio_is_clipped_by_hand():
    """student = behavior + ln 2 -> ratio 2; A = [1, 1]. Unclipped: -2 per token; clipped at
    1 + 0.2: -1.2 per token; the max of the two losses is -1.2 -> loss_sum = -2.4, and no gradient
    flows through the clipped branch. With clip_high = 2 the ratio stays: -4."""
    behavior = _t([[-2.0, -2.0]])
    student = (behavior + LN(2)).requires_grad_()
    loss_sum, _ = opd_pg_sum(student, behavior, behavior + 1.0, torch.ones(1, 2))
    torch.testing.assert_close(loss_sum, _t(-2.4))
    (grad,) = torch.autograd.grad(loss_sum, student)
    assert bool((grad == 0).all())
    loss_sum, _ = opd_pg_sum(behavior + LN(2), behavior, behavior + 1.0, torch.ones(1, 2), clip_high=2.0)
    torch.testing.assert_close(loss_sum, _t(-4.0))


def test_opd_pg_zero_when_teacher_is_the_sampler():
    """teacher == behavior -> A = 0: loss, gradient and KL are exactly 0 whatever the ratio."""
    torch.manual_seed(3)
    behavior = -torch.rand(2, 5) * 5
    student = (behavior + 0.3 * torch.randn(2, 5)).requires_grad_()
    loss_sum, kl_sum = opd_pg_sum(student, behavior, behavior.clone(), torch.ones(2, 5))
    (grad,) = torch.autograd.grad(loss_sum, student)
    assert loss_sum.item() == 0.0 and kl_sum.item() == 0.0
    assert bool((grad == 0).all())


def test_opd_pg_ignores_masked_non_finite_values():
    """Padding positions may hold -inf log-probs (never scored); they must not turn the sums NaN."""
    student = _t([[-1.0, NEG_INF]]).requires_grad_()
    behavior = _t([[-1.0, NEG_INF]])
    teacher = _t([[-0.5, NEG_INF]])
    loss_sum, kl_sum = opd_pg_sum(student, behavior, teacher, torch.tensor([[True, False]]))
    (grad,) = torch.autograd.grad(loss_sum, student)
    torch.testing.assert_close(loss_sum, _t(-0.5))
    torch.testing.assert_close(kl_sum, _t(-0.5))
    assert bool(torch.isfinite(grad).all())


# ------------------------------------------------------------------------------------------------
# clipped_pg_sum (F5) and KL estimators
# ------------------------------------------------------------------------------------------------


def test_clipped_pg_by_hand():
    """Ratios [0.5, 1, 1.5] with A = [-1, 2, 1] and clip 0.2:
    t0: -A rho = 0.5, -A clip(rho) = 0.8 -> 0.8 (clipped; a negative advantage keeps the ratio >= 0.8)
    t1: -2, -2 -> -2 (inside)
    t2: -1.5, -1.2 -> -1.2 (clipped). Sum -2.4, two clipped tokens; weights 0.5 on t1 give -1.4."""
    behavior = _t([[-1.0, -1.0, -1.0]])
    logp = (behavior + torch.log(_t([[0.5, 1.0, 1.5]]))).requires_grad_()
    advantage = _t([[-1.0, 2.0, 1.0]])
    loss, clipped = clipped_pg_sum(logp, behavior, advantage, torch.ones(1, 3), clip_low=0.2, clip_high=0.2)
    torch.testing.assert_close(loss, _t(-2.4))
    assert int(clipped) == 2
    (grad,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(grad, _t([[0.0, -2.0, 0.0]]))  # d(-A rho)/d logp = -A rho, only where unclipped
    weighted, _ = clipped_pg_sum(logp, behavior, advantage, _t([[1.0, 0.5, 1.0]]), clip_low=0.2, clip_high=0.2)
    torch.testing.assert_close(weighted, _t(-1.4))


def test_stale_sample_ratio_is_the_importance_ratio_and_clipped():
    """A sample drawn one version ago (`loop.overlap` 1): its behaviour log-probs are the old
    policy's, so rho = pi_new / pi_old is the real importance ratio. The policy has since tripled
    token 0's probability and thirded token 1's; A = 1: rho 3 is clipped to 1.2 (loss -1.2, no
    gradient), rho 1/3 stays (loss -1/3, gradient -1/3), since for A > 0 only the upper clip binds.
    Scored as if fresh (behaviour = the new log-probs) both ratios would be 1: loss -2."""
    old_policy = _t([[LN(0.1), LN(0.6)]])
    new_policy = (old_policy + _t([[LN(3.0), -LN(3.0)]])).requires_grad_()
    advantage, mask = _t([[1.0, 1.0]]), torch.ones(1, 2)
    loss, clipped = clipped_pg_sum(new_policy, old_policy, advantage, mask, clip_low=0.2, clip_high=0.2)
    torch.testing.assert_close(loss, _t(-1.2 - 1 / 3))
    assert int(clipped) == 1
    (grad,) = torch.autograd.grad(loss, new_policy)
    torch.testing.assert_close(grad, _t([[0.0, -1 / 3]]))
    fresh, _ = clipped_pg_sum(new_policy, new_policy.detach(), advantage, mask, clip_low=0.2, clip_high=0.2)
    torch.testing.assert_close(fresh, _t(-2.0))


def test_kl_estimators_by_hand():
    """u = log pi - log pi_ref = [ln 2, -ln 2]: k2 = u^2 / 2 each = (ln 2)^2;
    k3 = exp(-u) - 1 + u = (0.5 - 1 + ln 2) + (2 - 1 - ln 2) = 0.5. Both are 0 at u = 0."""
    ref = _t([[-1.0, -1.0]])
    logp = ref + _t([[LN(2), -LN(2)]])
    mask = torch.ones(1, 2)
    torch.testing.assert_close(kl_estimate_sum(logp, ref, mask, estimator="k2"), _t(LN(2) ** 2))
    torch.testing.assert_close(kl_estimate_sum(logp, ref, mask, estimator="k3"), _t(0.5))
    assert kl_estimate_sum(ref, ref, mask, estimator="k3").item() == 0.0


def test_k2_gradient_is_the_log_ratio():
    """d k2 / d log pi = u: the reverse-KL score-function gradient on the policy's own samples."""
    ref = _t([[-1.0, -2.0]])
    logp = (ref + _t([[0.3, -0.2]])).requires_grad_()
    (grad,) = torch.autograd.grad(kl_estimate_sum(logp, ref, torch.ones(1, 2), estimator="k2"), logp)
    torch.testing.assert_close(grad, _t([[0.3, -0.2]]))


# ------------------------------------------------------------------------------------------------
# IPO, RPO's NLL, REDI
# ------------------------------------------------------------------------------------------------


def test_ipo_by_hand():
    """chosen log-ratio 2 over 4 tokens, rejected log-ratio -1 over 2 tokens: h = 0.5 + 0.5 = 1;
    beta = 0.25 -> target 1 / (2 beta) = 2; loss = (1 - 2)^2 = 1."""
    got = ipo_loss(_t([-3.0]), _t([-4.0]), _t([-5.0]), _t([-3.0]), _t([4.0]), _t([2.0]), beta=0.25)
    torch.testing.assert_close(got, _t([1.0]))


def test_rpo_nll_by_hand():
    """-log pi(y_w) / |y_w| = 6 / 3 = 2."""
    torch.testing.assert_close(rpo_nll(_t([-6.0]), _t([3.0])), _t([2.0]))


def test_redi_by_hand():
    """chosen log-prob -6 over 3 tokens, rejected -8 over 4, alpha 0.8:
    loss = 6 / 3 + 0.8 * (-8 / 4) = 2 - 1.6 = 0.4; gradients -1/3 (chosen) and 0.8 / 4 = 0.2."""
    chosen, rejected = _t([-6.0]).requires_grad_(), _t([-8.0]).requires_grad_()
    got = redi_loss(chosen, rejected, _t([3.0]), _t([4.0]), alpha=0.8)
    torch.testing.assert_close(got, _t([0.4]))
    g_chosen, g_rejected = torch.autograd.grad(got.sum(), (chosen, rejected))
    torch.testing.assert_close(g_chosen, _t([-1 / 3]))
    torch.testing.assert_close(g_rejected, _t([0.2]))
