"""Losses: hand-derived values (the maths is in each docstring), TRL 1.16 parity, NaN safety.

Hand-derived tests run in float64 so they check the formula, not the rounding. Parity tests import
TRL lazily (pytest.importorskip) so the hand-derived tier runs without it.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tutorloop.objectives.losses import (
    dpo_loss,
    dpo_rewards,
    full_kl_sum,
    generalized_jsd,
    ipo_loss,
    opd_jsd_sum,
    rpo_nll,
    sequence_logps,
    sft_nll_sum,
    token_logprobs,
    topk_with_tail,
)

LN = math.log
NEG_INF = float("-inf")
f64 = torch.float64


def _t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=f64)


def _all_finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


@pytest.fixture(scope="module")
def trl():
    """TRL 1.16, imported once per module (~4 s cold, in setup rather than in a test's call):
    `selective_log_softmax`, the DPO trainer, and GKD's loss, which 1.16 moved to
    trl.experimental.gkd as a staticmethod on the trainer."""
    import os
    from types import SimpleNamespace

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    trl_utils = pytest.importorskip("trl.trainer.utils")
    gkd = pytest.importorskip("trl.experimental.gkd")
    from trl import DPOConfig, DPOTrainer

    return SimpleNamespace(selective_log_softmax=trl_utils.selective_log_softmax, DPOConfig=DPOConfig,
                           DPOTrainer=DPOTrainer, generalized_jsd_loss=gkd.GKDTrainer.generalized_jsd_loss)


# ------------------------------------------------------------------------------------------------
# token_logprobs / sequence_logps / sft_nll_sum (F1)
# ------------------------------------------------------------------------------------------------


def test_token_logprobs_by_hand():
    """logits [0, ln 3] -> softmax [1/4, 3/4]; label 1 -> ln(3/4), label 0 -> ln(1/4), -100 -> 0.
    At tau = 2 the logits [0, 2 ln 3] become [0, ln 3], so the same values come out."""
    logits_B_T_V = _t([[[0.0, LN(3)], [0.0, LN(3)], [5.0, -5.0]]])
    labels_B_T = torch.tensor([[1, 0, -100]])
    want_B_T = _t([[LN(3 / 4), LN(1 / 4), 0.0]])
    torch.testing.assert_close(token_logprobs(logits_B_T_V, labels_B_T), want_B_T)
    torch.testing.assert_close(token_logprobs(2 * logits_B_T_V, labels_B_T, temperature=2.0), want_B_T)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_matches_naive_log_softmax_gather(temperature):
    """Equal to log_softmax(z / tau).gather(labels) in float32, and within bf16 rounding for bf16
    logits (which take the float32 per-row path)."""
    torch.manual_seed(0)
    logits_B_T_V = 3 * torch.randn(3, 5, 17)
    labels_B_T = torch.randint(0, 17, (3, 5))
    labels_B_T[0, :2] = -100
    logp_B_T_V = F.log_softmax(logits_B_T_V / temperature, -1)
    naive_B_T = logp_B_T_V.gather(-1, labels_B_T.clamp(min=0)[..., None])[..., 0]
    naive_B_T = naive_B_T.masked_fill(labels_B_T == -100, 0.0)
    torch.testing.assert_close(token_logprobs(logits_B_T_V, labels_B_T, temperature), naive_B_T)
    got_bf16 = token_logprobs(logits_B_T_V.bfloat16(), labels_B_T, temperature)
    assert got_bf16.dtype == torch.float32
    torch.testing.assert_close(got_bf16, naive_B_T, atol=0.1, rtol=0.02)


def test_token_logprobs_parity_with_trl_selective_log_softmax(trl):
    torch.manual_seed(1)
    logits_B_T_V = torch.randn(2, 6, 13)
    labels_B_T = torch.randint(0, 13, (2, 6))
    want = trl.selective_log_softmax(logits_B_T_V, labels_B_T, temperature=0.9)
    torch.testing.assert_close(token_logprobs(logits_B_T_V, labels_B_T, temperature=0.9), want)


def test_sft_nll_sum_and_sequence_logps_by_hand():
    """logp = [[-1, -2, -3], [-0.5, -4, -inf]], mask = [[1, 1, 0], [1, 0, 0]]:
    sequence log-probs = [-3, -0.5]; with weights [1, 2] the NLL sum is 1 * 3 + 2 * 0.5 = 4.
    The -inf sits under the mask and must not leak in (0 * -inf would be NaN)."""
    logp_B_T = _t([[-1.0, -2.0, -3.0], [-0.5, -4.0, NEG_INF]])
    mask_B_T = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    torch.testing.assert_close(sequence_logps(logp_B_T, mask_B_T), _t([-3.0, -0.5]))
    torch.testing.assert_close(sft_nll_sum(logp_B_T, mask_B_T), _t(3.5))
    torch.testing.assert_close(sft_nll_sum(logp_B_T, mask_B_T, weight_B=_t([1.0, 2.0])), _t(4.0))


def test_sft_nll_sum_float_mask_is_token_weight():
    """F1 token weights w_t: prompt tokens at 0.1 (Learn-to-Reason) -> 0.1 * 2 + 1 * 3 = 3.2."""
    logp_B_T = _t([[-2.0, -3.0]])
    torch.testing.assert_close(sft_nll_sum(logp_B_T, _t([[0.1, 1.0]])), _t(3.2))


# ------------------------------------------------------------------------------------------------
# DPO (F3)
# ------------------------------------------------------------------------------------------------


def test_dpo_loss_by_hand():
    """logits = [0, 10, 20], beta = 0.1  ->  loss = -log sigmoid([0, 1, 2]) (ARCHITECTURE rule 7)."""
    z = _t([0.0, 10.0, 20.0])
    zero = torch.zeros(3, dtype=f64)
    got = dpo_loss(z, zero, zero, zero, beta=0.1)
    torch.testing.assert_close(got, -torch.log(torch.sigmoid(_t([0.0, 1.0, 2.0]))))


def test_dpo_loss_and_rewards_with_reference_by_hand():
    """policy (chosen, rejected) = (-5, -9), reference = (-6, -7), beta = 0.5:
    log-ratios chosen = 1, rejected = -2; logits = 1 - (-2) = 3; loss = -log sigmoid(1.5) = log(1 + e^-1.5).
    Implicit rewards: chosen = 0.5 * 1 = 0.5, rejected = 0.5 * -2 = -1, detached."""
    pc = _t([-5.0]).requires_grad_()
    args = (pc, _t([-9.0]), _t([-6.0]), _t([-7.0]))
    torch.testing.assert_close(dpo_loss(*args, beta=0.5), _t([math.log1p(math.exp(-1.5))]))
    chosen, rejected = dpo_rewards(*args, beta=0.5)
    torch.testing.assert_close(chosen, _t([0.5]))
    torch.testing.assert_close(rejected, _t([-1.0]))
    assert not chosen.requires_grad and not rejected.requires_grad


TRL_LOSS_TYPES = {"sigmoid": (["sigmoid"], None), "ipo": (["ipo"], None), "rpo": (["sigmoid", "sft"], [1.0, 0.7])}


@pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers 5 renames in TrainingArguments
@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "rpo"])
def test_dpo_parity_with_trl_dpo_trainer(trl, tiny_tokenizer, tmp_path, loss_type):
    """TRL 1.16 computes the DPO losses inline in `DPOTrainer._compute_loss` (no standalone
    function), so build the smallest real trainer: two 1-layer random Llamas (policy, reference),
    two preference pairs, one collated batch. TRL's loss (mean over pairs) must equal ours fed
    with our token_logprobs + sequence_logps on the same batch (sigmoid, ipo, and rpo as TRL's
    ["sigmoid", "sft"] with weights [1, c_nll]; chosen sides of equal length there, where TRL's
    batch token-mean NLL equals our per-pair mean), and its logged rewards/chosen and
    rewards/rejected must equal the mean of dpo_rewards."""
    datasets = pytest.importorskip("datasets")
    from transformers import LlamaConfig, LlamaForCausalLM

    def tiny_llama(seed: int) -> LlamaForCausalLM:
        cfg = LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=16, intermediate_size=32,
                          num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                          pad_token_id=tiny_tokenizer.pad_token_id, bos_token_id=tiny_tokenizer.bos_token_id,
                          eos_token_id=tiny_tokenizer.eos_token_id)
        torch.manual_seed(seed)
        return LlamaForCausalLM(cfg)

    beta = 0.3
    model, ref_model = tiny_llama(0), tiny_llama(1)
    chosen = [" 2 ok", " 5 ok"] if loss_type == "rpo" else [" 2", " 5 ok"]
    pairs = datasets.Dataset.from_dict({"prompt": ["1+1=", "2+3="], "chosen": chosen, "rejected": [" 3 no", " 6"]})
    trl_types, trl_weights = TRL_LOSS_TYPES[loss_type]
    args = trl.DPOConfig(output_dir=str(tmp_path), report_to=[], per_device_train_batch_size=2, beta=beta,
                     loss_type=trl_types, loss_weights=trl_weights, use_cpu=True, logging_strategy="no",
                     save_strategy="no", disable_tqdm=True)
    trainer = trl.DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=pairs,
                         processing_class=tiny_tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))  # rows: [chosen_0, chosen_1, rejected_0, rejected_1]
    model.train()  # TRL logs under "train" only when the model is in training mode
    with torch.no_grad():
        trl_loss = trainer.compute_loss(model, batch)

    ids_B_T, attn_B_T, completion_B_T = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    labels_B_T = ids_B_T.masked_fill(completion_B_T == 0, -100)

    def seq_logp_B(lm) -> torch.Tensor:
        logits_B_T_V = lm(input_ids=ids_B_T, attention_mask=attn_B_T).logits
        # logits[:, t] predicts token t + 1: shift once here, as the trainer will
        logp_B_T = token_logprobs(logits_B_T_V[:, :-1], labels_B_T[:, 1:])
        return sequence_logps(logp_B_T, completion_B_T[:, 1:])

    with torch.no_grad():
        policy_chosen, policy_rejected = seq_logp_B(model).chunk(2)
        ref_chosen, ref_rejected = seq_logp_B(ref_model).chunk(2)
    chosen_len, rejected_len = completion_B_T[:, 1:].sum(-1).chunk(2)
    logps = (policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    if loss_type == "ipo":
        ours = ipo_loss(*logps, chosen_len, rejected_len, beta=beta).mean()
    else:
        ours = dpo_loss(*logps, beta=beta).mean()
    if loss_type == "rpo":
        assert chosen_len[0] == chosen_len[1]
        ours = ours + 0.7 * rpo_nll(policy_chosen, chosen_len).mean()
    torch.testing.assert_close(ours, trl_loss, atol=1e-6, rtol=1e-5)
    chosen_r, rejected_r = dpo_rewards(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=beta)
    logged = trainer._metrics["train"]
    assert logged["rewards/chosen"][-1] == pytest.approx(chosen_r.mean().item(), abs=1e-6)
    assert logged["rewards/rejected"][-1] == pytest.approx(rejected_r.mean().item(), abs=1e-6)


# ------------------------------------------------------------------------------------------------
# Generalized JSD (F2)
# ------------------------------------------------------------------------------------------------

# Two-token vocabulary: p_T = [1/2, 1/2], p_S = [1/4, 3/4].
P_T = [0.5, 0.5]
P_S = [0.25, 0.75]


def _kl(p, q) -> float:
    return sum(pi * LN(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def _jsd_by_hand(beta: float) -> float:
    """M = beta p_T + (1 - beta) p_S; JSD = beta KL(p_T || M) + (1 - beta) KL(p_S || M)."""
    m = [beta * t + (1 - beta) * s for t, s in zip(P_T, P_S)]
    return beta * _kl(P_T, m) + (1 - beta) * _kl(P_S, m)


def test_generalized_jsd_two_token_vocab_by_hand():
    """beta = 0: KL(p_T || p_S) = 1/2 ln 2 + 1/2 ln(2/3) = 1/2 ln(4/3)            (forward)
    beta = 1: KL(p_S || p_T) = 1/4 ln(1/2) + 3/4 ln(3/2)                           (reverse)
    beta = 1/2: M = [3/8, 5/8]; JSD = 1/2 [1/2 ln(4/3) + 1/2 ln(4/5)] + 1/2 [1/4 ln(2/3) + 3/4 ln(6/5)]
    beta = 0.9: same formula with M = 0.9 p_T + 0.1 p_S (checks which side beta weights)."""
    student = torch.log(_t([P_S]))
    teacher = torch.log(_t([P_T]))
    cases = {
        0.0: 0.5 * LN(4 / 3),
        1.0: 0.25 * LN(0.5) + 0.75 * LN(1.5),
        0.5: 0.5 * (0.5 * LN(4 / 3) + 0.5 * LN(4 / 5)) + 0.5 * (0.25 * LN(2 / 3) + 0.75 * LN(6 / 5)),
        0.9: _jsd_by_hand(0.9),
    }
    assert cases[0.5] == pytest.approx(_jsd_by_hand(0.5))
    for beta, want in cases.items():
        got = generalized_jsd(student, teacher, beta=beta)
        torch.testing.assert_close(got, _t([want]), msg=f"beta={beta}")


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_generalized_jsd_same_distribution_is_zero(beta):
    torch.manual_seed(0)
    logp_N_V = F.log_softmax(torch.randn(4, 9, dtype=f64), -1)
    torch.testing.assert_close(generalized_jsd(logp_N_V, logp_N_V.clone(), beta=beta),
                               torch.zeros(4, dtype=f64), atol=1e-12, rtol=0)


def test_generalized_jsd_rejects_beta_outside_unit_interval():
    logp = torch.log(_t([P_S]))
    with pytest.raises(ValueError):
        generalized_jsd(logp, logp, beta=1.5)


def _random_gkd_batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    student_B_T_V = (2 * torch.randn(3, 5, 11, generator=g)).requires_grad_()
    teacher_B_T_V = 2 * torch.randn(3, 5, 11, generator=g)
    labels_B_T = torch.randint(0, 11, (3, 5), generator=g)
    labels_B_T[0, :3] = -100
    labels_B_T[2, 4] = -100
    return student_B_T_V, teacher_B_T_V, labels_B_T


@pytest.mark.parametrize("temperature", [1.0, 0.9, 2.0])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 0.3])
def test_generalized_jsd_parity_with_trl(trl, beta, temperature):
    """TRL `generalized_jsd_loss(labels=..., reduction="batchmean")` returns
    sum_{unmasked t, v} jsd / (number of unmasked t). Ours: log_softmax(z / tau) for both sides,
    jsd_N per position, masked sum / same count. Values and student-logit gradients must agree."""
    student_B_T_V, teacher_B_T_V, labels_B_T = _random_gkd_batch(seed=int(10 * beta + temperature * 7))
    want = trl.generalized_jsd_loss(student_B_T_V, teacher_B_T_V, labels=labels_B_T, beta=beta,
                                    temperature=temperature)
    (want_grad,) = torch.autograd.grad(want, student_B_T_V)

    mask_B_T = labels_B_T != -100
    s_N_V = F.log_softmax(student_B_T_V / temperature, -1)[mask_B_T]
    t_N_V = F.log_softmax(teacher_B_T_V / temperature, -1)[mask_B_T]
    got = generalized_jsd(s_N_V, t_N_V, beta=beta).sum() / mask_B_T.sum()
    (got_grad,) = torch.autograd.grad(got, student_B_T_V)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got_grad, want_grad, atol=1e-7, rtol=1e-5)

    # Gradient-accumulation form: TRL divides by num_items_in_batch; our sum / the same count.
    want_sum_form = trl.generalized_jsd_loss(student_B_T_V, teacher_B_T_V, labels=labels_B_T, beta=beta,
                            temperature=temperature, num_items_in_batch=40)
    torch.testing.assert_close(generalized_jsd(s_N_V, t_N_V, beta=beta).sum() / 40, want_sum_form,
                               atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("temperature", [0.9, 2.0])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_opd_jsd_sum_full_support_parity_with_trl(trl, beta, temperature):
    """k = V, teacher log-probs scored at tau = 1 (as a scorer serves them): opd_jsd_sum / #tokens
    must reproduce TRL's full-vocabulary batchmean, which tempers the teacher's logits as well as
    the student's (defect 13b: tempering only the student gave 1.54 against TRL's 0.90)."""
    student_B_T_V, teacher_B_T_V, labels_B_T = _random_gkd_batch(seed=3)
    want = trl.generalized_jsd_loss(student_B_T_V, teacher_B_T_V, labels=labels_B_T, beta=beta,
                                    temperature=temperature)
    teacher_logp_B_T_V = F.log_softmax(teacher_B_T_V, -1)
    topk_logp_B_T_K, topk_ids_B_T_K = teacher_logp_B_T_V.sort(dim=-1, descending=True)
    mask_B_T = labels_B_T != -100
    got = opd_jsd_sum(student_B_T_V, topk_ids_B_T_K, topk_logp_B_T_K, mask_B_T,
                      beta=beta, temperature=temperature) / mask_B_T.sum()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    (want_grad,) = torch.autograd.grad(want, student_B_T_V)
    (got_grad,) = torch.autograd.grad(got, student_B_T_V)
    torch.testing.assert_close(got_grad, want_grad, atol=2e-5, rtol=1e-4)  # float32 round-off


@pytest.mark.parametrize("top_k", [1, 3, 11])
@pytest.mark.parametrize("temperature", [0.5, 2.0])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_opd_jsd_sum_student_equal_teacher_is_zero_at_any_temperature(beta, temperature, top_k):
    """Self-distillation (METHODS 4.11.10): the teacher is the student, served as top-k at tau = 1;
    the loss is 0 at every temperature and k (defect 13b: 0.197 when only the student was tempered)."""
    logits_B_T_V, _, labels_B_T = _random_gkd_batch(seed=5)
    topk_logp_B_T_K, topk_ids_B_T_K = F.log_softmax(logits_B_T_V.detach(), -1).topk(top_k, dim=-1)
    got = opd_jsd_sum(logits_B_T_V.detach(), topk_ids_B_T_K, topk_logp_B_T_K, labels_B_T != -100,
                      beta=beta, temperature=temperature)
    assert abs(got.item()) < 1e-5


def test_temper_buckets_by_hand():
    """Two buckets q = [0.8, 0.2] at tau = 2: softmax(log q / 2) = [sqrt .8, sqrt .2] / (sqrt .8 + sqrt .2)
    = [2/3, 1/3]. A teacher [0.5, 0.5] stays uniform. At tau = 1 nothing changes."""
    from tutorloop.objectives.losses import temper_buckets

    s, t = temper_buckets(torch.log(_t([[0.8, 0.2]])), torch.log(_t([[0.5, 0.5]])), 2.0)
    torch.testing.assert_close(s.exp(), _t([[2 / 3, 1 / 3]]))
    torch.testing.assert_close(t.exp(), _t([[0.5, 0.5]]))
    same = torch.log(_t([[0.8, 0.2]]))
    assert temper_buckets(same, same, 1.0)[0] is same


# ------------------------------------------------------------------------------------------------
# Top-k + tail bucket
# ------------------------------------------------------------------------------------------------


def test_topk_with_tail_top1_by_hand():
    """V = 3, p_S = [0.5, 0.3, 0.2]; the teacher lists only token 0 with p_T = 0.8.
    Buckets: student [0.5, 0.5], teacher [0.8, 0.2]. Forward KL = 0.8 ln(0.8/0.5) + 0.2 ln(0.2/0.5)
    ~ 0.193 > 0. Renormalizing over the single listed token would give [1] vs [1]: KL = 0."""
    student_N_V = torch.log(_t([[0.5, 0.3, 0.2]]))
    s, t = topk_with_tail(student_N_V, torch.tensor([[0]]), torch.log(_t([[0.8]])))
    torch.testing.assert_close(s.exp(), _t([[0.5, 0.5]]))
    torch.testing.assert_close(t.exp(), _t([[0.8, 0.2]]))
    want = 0.8 * LN(0.8 / 0.5) + 0.2 * LN(0.2 / 0.5)
    torch.testing.assert_close(generalized_jsd(s, t, beta=0.0), _t([want]))
    assert want > 0.19


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_topk_with_tail_full_support_equals_full_vocab(beta):
    """k = V in a shuffled order: the buckets are a permutation of the vocabulary plus a tail of
    ~0 mass on both sides (clamped to the same floor), so the JSD equals the full-vocab JSD."""
    torch.manual_seed(0)
    student_N_V = F.log_softmax(torch.randn(4, 7), -1)
    teacher_N_V = F.log_softmax(torch.randn(4, 7), -1)
    ids_N_K = torch.stack([torch.randperm(7) for _ in range(4)])
    s, t = topk_with_tail(student_N_V, ids_N_K, teacher_N_V.gather(-1, ids_N_K))
    assert s.shape == t.shape == (4, 8)
    want = generalized_jsd(student_N_V, teacher_N_V, beta=beta)
    torch.testing.assert_close(generalized_jsd(s, t, beta=beta), want, atol=5e-6, rtol=1e-5)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_exhausted_tails_contribute_nothing(beta):
    """Both tails empty (k = V): each is clamped to the same floor log(1e-7), so the tail bucket's
    own KL summand is p (f - f) = 0 exactly at the endpoints and ~1e-13 in the mixture."""
    torch.manual_seed(1)
    student_N_V = F.log_softmax(torch.randn(3, 5, dtype=f64), -1)
    teacher_N_V = F.log_softmax(torch.randn(3, 5, dtype=f64), -1)
    ids_N_K = torch.arange(5).expand(3, 5)
    s, t = topk_with_tail(student_N_V, ids_N_K, teacher_N_V)
    torch.testing.assert_close(s[:, -1], t[:, -1])
    assert bool((s[:, -1] > -17).all()) and bool((s[:, -1] < -16).all())  # log(1e-7) ~ -16.12
    with_tail = generalized_jsd(s, t, beta=beta)
    without_tail = generalized_jsd(s[:, :-1], t[:, :-1], beta=beta)
    torch.testing.assert_close(with_tail, without_tail, atol=1e-12, rtol=0)


def test_topk_padding_conventions_agree():
    """Padding by id -1 and padding by (a valid id, logp -inf) give the same buckets as K = 1.
    The padded slot reuses token 0, the real top-1: its student mass must not be counted twice."""
    student_N_V = torch.log(_t([[0.5, 0.3, 0.2]]))
    teacher_top1 = LN(0.8)
    want_s, want_t = topk_with_tail(student_N_V, torch.tensor([[0]]), _t([[teacher_top1]]))
    by_negative_id = topk_with_tail(student_N_V, torch.tensor([[0, -1, -1]]), _t([[teacher_top1, 0.0, -3.0]]))
    by_neg_inf = topk_with_tail(student_N_V, torch.tensor([[0, 0, 0]]),
                                _t([[teacher_top1, NEG_INF, NEG_INF]]))
    for s, t in (by_negative_id, by_neg_inf):
        assert bool((s[:, 1:3] == NEG_INF).all()) and bool((t[:, 1:3] == NEG_INF).all())
        torch.testing.assert_close(s[:, [0, 3]], want_s)
        torch.testing.assert_close(t[:, [0, 3]], want_t)
        for beta in (0.0, 0.5, 1.0):
            want = generalized_jsd(want_s, want_t, beta=beta)
            torch.testing.assert_close(generalized_jsd(s, t, beta=beta), want)


# ------------------------------------------------------------------------------------------------
# opd_jsd_sum
# ------------------------------------------------------------------------------------------------


def test_opd_jsd_sum_is_masked_sum_of_per_position_jsd():
    """opd_jsd_sum = sum over masked t of JSD(temper_buckets(topk_with_tail(log_softmax(z_t), ...), tau)).
    Masked-out positions hold NaN logits to prove they are never read."""
    from tutorloop.objectives.losses import temper_buckets

    torch.manual_seed(2)
    logits_B_T_V = torch.randn(2, 3, 6)
    ids_B_T_K = torch.randint(0, 6, (2, 3, 1)).expand(2, 3, 2).clone()
    ids_B_T_K[..., 1] = (ids_B_T_K[..., 0] + 1) % 6
    topk_logp_B_T_K = torch.log(torch.tensor([0.6, 0.3])).expand(2, 3, 2)
    mask_B_T = torch.tensor([[1, 1, 0], [0, 1, 1]], dtype=torch.bool)
    want = 0.0
    for b, t in mask_B_T.nonzero().tolist():
        s, tt = temper_buckets(*topk_with_tail(F.log_softmax(logits_B_T_V[b, t : t + 1], -1), ids_B_T_K[b, t : t + 1],
                                               topk_logp_B_T_K[b, t : t + 1]), 1.5)
        want = want + generalized_jsd(s, tt, beta=0.5).sum()
    poisoned_B_T_V = logits_B_T_V.masked_fill(~mask_B_T[..., None], float("nan"))
    got = opd_jsd_sum(poisoned_B_T_V, ids_B_T_K, topk_logp_B_T_K, mask_B_T, beta=0.5, temperature=1.5)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_opd_jsd_sum_no_nan_on_extreme_inputs(beta, temperature):
    """Very peaked student (logit gap 1e4), a teacher that is certain (top-1 logp 0, tail 0), padded
    slots (-1 ids, -inf logps), a row of padding only, and a near-empty tail: finite loss and grads."""
    V = 8
    logits_B_T_V = torch.zeros(1, 4, V)
    logits_B_T_V[0, :, 3] = 1e4
    logits_B_T_V.requires_grad_()
    ids_B_T_K = torch.tensor([[[3, -1, -1], [5, -1, -1], [-1, -1, -1], [3, 5, 0]]])
    topk_logp_B_T_K = torch.tensor([[[0.0, NEG_INF, NEG_INF],      # teacher certain of the student's mode
                                     [-1e-3, NEG_INF, NEG_INF],    # teacher disagrees, tail ~1e-3
                                     [NEG_INF, NEG_INF, NEG_INF],  # nothing served for this position
                                     [-1e-9, -25.0, -30.0]]])      # tail below float32 resolution
    mask_B_T = torch.ones(1, 4, dtype=torch.bool)
    loss = opd_jsd_sum(logits_B_T_V, ids_B_T_K, topk_logp_B_T_K, mask_B_T, beta=beta, temperature=temperature)
    (grad,) = torch.autograd.grad(loss, logits_B_T_V)
    assert _all_finite(loss, grad)
    assert loss.item() > 0.5  # position 1 is a real disagreement (JSD_0.5 <= ln 2 per position)


def test_full_kl_sum_by_hand_weighted_by_the_mask_and_without_gradient_to_the_reference():
    """Two positions over a 2-token vocabulary: p = (1/2, 1/2) against q = (1/4, 3/4) gives
    KL = 1/2 ln 2 + 1/2 ln(2/3) = 1/2 ln(4/3); the second position has p = q (KL 0), the third is
    masked out, and a mask weight of 0.5 halves the first's term."""
    logits = torch.tensor([[[0.0, 0.0], [LN(1), LN(3)], [5.0, -5.0]]], dtype=f64, requires_grad=True)
    ref = torch.tensor([[[LN(1), LN(3)], [LN(1), LN(3)], [0.0, 0.0]]], dtype=f64, requires_grad=True)
    mask = torch.tensor([[0.5, 1.0, 0.0]], dtype=f64)
    kl = full_kl_sum(logits, ref, mask)
    assert kl.item() == pytest.approx(0.5 * 0.5 * LN(4 / 3), rel=1e-12)
    kl.backward()
    assert ref.grad is None or not ref.grad.any()  # the anchor pulls the policy only
    assert logits.grad[0, 2].abs().sum() == 0 and logits.grad[0, 0].abs().sum() > 0
    same = full_kl_sum(ref.detach(), ref.detach(), torch.ones(1, 3, dtype=f64))
    assert same.item() == pytest.approx(0.0, abs=1e-12)


def test_full_kl_sum_matches_torch_kl_div():
    torch.manual_seed(0)
    logits, ref = torch.randn(2, 5, 11, dtype=f64), torch.randn(2, 5, 11, dtype=f64)
    mask = (torch.rand(2, 5) > 0.3).to(f64)
    # F.kl_div(input=log q, target=log p, log_target=True) = sum p (log p - log q) = KL(p || q)
    want = (F.kl_div(ref.log_softmax(-1), logits.log_softmax(-1), reduction="none", log_target=True).sum(-1) * mask).sum()
    assert full_kl_sum(logits, ref, mask).item() == pytest.approx(want.item(), rel=1e-10)
