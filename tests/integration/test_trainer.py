"""OnlineTrainer on tiny random models: objectives by weight, accumulation invariance, KD = 0 for
identical student and teacher, LoRA and full fine-tuning, dropout off, eager attention."""

import asyncio

import pytest
import torch

from tutorloop.generators.hf import HFGenerator
from tutorloop.trainers.online import OnlineTrainer
from tutorloop.trainers.batching import encode_lessons
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Lesson, SamplingParams

pytestmark = pytest.mark.integration

LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "task_type": "CAUSAL_LM"}
PROMPT = ({"role": "user", "content": "What is 2 + 3?"},)
PROMPTS = [PROMPT, ({"role": "user", "content": "Sum 10 and 5, please."},), ({"role": "user", "content": "7?"},)]


def _encoder() -> TokenEncoder:
    from conftest import build_tiny_tokenizer  # the tokenizer every tiny model is saved with

    return TokenEncoder(build_tiny_tokenizer())


ENCODE = _encoder()


def sft(prompt, text, **kw) -> Lesson:
    return Lesson("sft", ENCODE.prompt(prompt), ENCODE.text(text), **kw)


def pair(prompt, chosen, rejected, objective="dpo") -> Lesson:
    return Lesson(objective, ENCODE.prompt(prompt), ENCODE.text(chosen), rejected_ids=ENCODE.text(rejected, eos=False))


def _opd_examples(model_dir, teacher_dir=None, top_k=8, objective="kd"):
    """Student samples scored by `teacher_dir` (default: the student itself)."""
    gen = HFGenerator(str(model_dir), seed=3)
    outs = asyncio.run(gen.generate(PROMPTS, SamplingParams(temperature=1.0, max_new_tokens=10)))
    scorer = HFGenerator(str(teacher_dir)) if teacher_dir else gen
    scores = asyncio.run(scorer.score(PROMPTS, [o.token_ids for o in outs], top_k=top_k))
    return tuple(Lesson(objective, ENCODE.prompt(p), o.token_ids, behavior_logprobs=o.logprobs, teacher=s)
                 for p, o, s in zip(PROMPTS, outs, scores))


def _batch(model_dir, teacher_dir):
    from dataclasses import replace

    opd = _opd_examples(model_dir, teacher_dir)
    pairs = (pair(PROMPT, "The answer is 5.", "The answer is 6."), pair(PROMPTS[2], "The answer is 7.", "It is 8."))
    return ((sft(PROMPT, "2 + 3 = 5. The answer is 5."), sft(PROMPTS[1], "The answer is 15.")) + pairs
            + tuple(replace(x, objective="redi") for x in pairs) + opd + tuple(replace(x, objective="opd_pg") for x in opd))


def _trainer(model_dir, objectives, **kw):
    kw.setdefault("lora", LORA)
    return OnlineTrainer(str(model_dir), objectives=objectives, lr=1e-2, **kw)


@pytest.mark.parametrize("name", ["kd", "opd_pg"])
def test_distillation_loss_is_zero_when_student_is_teacher(tiny_lm_dir, name):
    trainer = _trainer(tiny_lm_dir, {name: 1})
    metrics = trainer.accumulate(_opd_examples(tiny_lm_dir, top_k=1000, objective=name))
    assert abs(metrics[f"loss/{name}"]) < 1e-4
    assert abs(metrics["kl/teacher_student"]) < 1e-4


@pytest.mark.parametrize("name", ["kd", "opd_pg"])
def test_distillation_gradient_is_nonzero_against_another_teacher(tiny_lm_dir, tiny_teacher_dir, name):
    batch = _opd_examples(tiny_lm_dir, tiny_teacher_dir, objective=name)
    trainer = _trainer(tiny_lm_dir, {name: 1})
    metrics = trainer.accumulate(batch)
    assert abs(metrics["kl/teacher_student"]) > 1e-3
    assert any(float(p.grad.abs().sum()) > 0 for p in trainer.model.parameters() if p.grad is not None)


def test_zero_weight_skips_the_forward_pass(tiny_lm_dir, tiny_teacher_dir):
    batch = _batch(tiny_lm_dir, tiny_teacher_dir)
    trainer = _trainer(tiny_lm_dir, {"sft": 1, "dpo": 0, "kd": 0}, micro_batch_size=8)
    calls = []
    trainer.model.get_base_model().register_forward_hook(lambda *a: calls.append(1))
    metrics = trainer.accumulate(batch)
    assert len(calls) == 1  # the two SFT examples in one micro-batch; no DPO, no OPD forward
    assert "loss/sft" in metrics and "loss/dpo" not in metrics and "loss/kd" not in metrics


@pytest.mark.parametrize("objectives", [{"sft": 1}, {"dpo": 1}, {"dpo": {"loss_type": "ipo"}},
                                        {"dpo": {"loss_type": "rpo"}}, {"redi": 1}, {"kd": {"temperature": 2.0}},
                                        {"opd_pg": 1}], ids=str)
def test_any_single_objective_trains(tiny_lm_dir, tiny_teacher_dir, objectives):
    trainer = _trainer(tiny_lm_dir, objectives)
    before = {k: v.clone() for k, v in trainer.model.named_parameters() if v.requires_grad}
    metrics = asyncio.run(trainer.step(_batch(tiny_lm_dir, tiny_teacher_dir)))
    assert metrics["policy_version"] == 1.0
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.named_parameters() if v.requires_grad)


def _grads(trainer, batch):
    trainer.accumulate(batch)
    return {k: v.grad.clone() for k, v in trainer.model.named_parameters() if v.grad is not None}


@pytest.mark.parametrize("lora", [LORA, None], ids=["lora", "full"])
def test_gradient_unchanged_by_more_accumulation_steps(tiny_lm_dir, tiny_teacher_dir, lora):
    """Each objective is divided by its global unit count, so micro-batch size must not matter."""
    batch = _batch(tiny_lm_dir, tiny_teacher_dir)
    objectives = {"sft": 1.0, "dpo": 0.5, "kd": 1.0, "opd_pg": 0.5}
    one = _grads(_trainer(tiny_lm_dir, objectives, lora=lora, micro_batch_size=8, seed=0), batch)
    many = _grads(_trainer(tiny_lm_dir, objectives, lora=lora, micro_batch_size=1, seed=0), batch)
    assert one.keys() == many.keys() and one
    for name in one:
        torch.testing.assert_close(many[name], one[name], atol=1e-5, rtol=1e-4)


def test_full_finetuning_reference_stays_frozen(tiny_lm_dir, tiny_teacher_dir):
    trainer = _trainer(tiny_lm_dir, {"dpo": 1}, lora=None)
    ref_before = {k: v.clone() for k, v in trainer.reference.state_dict().items()}
    asyncio.run(trainer.step(_batch(tiny_lm_dir, tiny_teacher_dir)))
    assert all(torch.equal(ref_before[k], v) for k, v in trainer.reference.state_dict().items())
    version, packed = asyncio.run(trainer.weights())
    assert version == 1 and len(packed.index) == len(trainer.model.state_dict())


def test_lora_sync_sends_only_adapter_tensors_and_generator_follows(tiny_lm_dir, tiny_teacher_dir):
    trainer = _trainer(tiny_lm_dir, {"sft": 1})
    asyncio.run(trainer.step(_batch(tiny_lm_dir, tiny_teacher_dir)))
    version, packed = asyncio.run(trainer.weights())
    assert packed.index and all("lora_" in name for name, *_ in packed.index)
    gen = HFGenerator(str(tiny_lm_dir), lora=LORA)
    asyncio.run(gen.load_weights(packed, version))
    from tutorloop.models import forward_targets
    ctx, tgt = list(ENCODE.prompt(PROMPT)), list(ENCODE.text("The answer is 5."))
    trainer.model.eval()
    with torch.no_grad():
        a = forward_targets(trainer.model, [ctx], [tgt], trainer.tokenizer.pad_token_id)[0]
        b = forward_targets(gen.model, [ctx], [tgt], gen.tokenizer.pad_token_id)[0]
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("lora", [LORA, None], ids=["lora", "full"])
def test_shared_prompt_dpo_forward_matches_unpacked_rows(tiny_lm_dir, lora):
    """DPO packs [prompt | chosen | rejected] in one row; each completion's log-prob (policy and
    reference) and the policy gradient must equal those of its own unpacked row."""
    trainer = _trainer(tiny_lm_dir, {"dpo": 1}, lora=lora)
    with torch.no_grad():  # a reference that differs from the policy, so a swap would show
        for p in trainer.params[:2]:
            p.add_(0.05)
    pairs = (pair(PROMPT, "The answer is 5.", "It is six, I think."),
             pair(PROMPTS[1], "15", "The answer is 50, since 10 times 5 is 50."), pair(PROMPTS[2], "Seven.", "8"))
    chunk = encode_lessons(pairs, trainer.max_seq_len, pairs=True)
    packed = trainer._pair_logps(chunk)
    packed[0].sum().backward()
    packed_grads = [p.grad.clone() for p in trainer.params]
    trainer.optimizer.zero_grad(set_to_none=True)
    rows = [c for c, _ in chunk] + [r for _, r in chunk]
    policy_B = trainer._sequence_logps(rows)
    with torch.no_grad(), trainer._reference() as reference:
        ref_B = trainer._sequence_logps(rows, reference)
    policy_B.sum().backward()
    torch.testing.assert_close(packed[0], policy_B, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed[1], ref_B, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(policy_B, ref_B)
    for got, want in zip(packed_grads, (p.grad for p in trainer.params)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("lora", [LORA, None], ids=["lora", "full"])
def test_bf16_autocast_keeps_fp32_weights_and_matches_the_fp32_step(tiny_lm_dir, tiny_teacher_dir, lora):
    from tutorloop.models import FP32_ATTENTION

    batch = _batch(tiny_lm_dir, tiny_teacher_dir)
    objectives = {"sft": 1.0, "dpo": 0.5, "kd": 1.0}
    exact = _trainer(tiny_lm_dir, objectives, lora=lora, seed=0)
    mixed = _trainer(tiny_lm_dir, objectives, lora=lora, seed=0, autocast="bfloat16")
    assert exact.autocast is None and mixed.autocast == torch.bfloat16
    assert mixed.model.config._attn_implementation == FP32_ATTENTION
    want, got = exact.accumulate(batch), mixed.accumulate(batch)
    for key in ("loss/sft", "loss/dpo", "loss/kd"):
        assert got[key] == pytest.approx(want[key], rel=0.03, abs=0.01), key
    grads = {n: p.grad for n, p in mixed.model.named_parameters() if p.grad is not None}
    assert grads and all(g.dtype == torch.float32 for g in grads.values())
    for name, p in exact.model.named_parameters():
        if p.grad is not None and float(p.grad.norm()) > 0:  # same direction: bf16 rounds the matmuls only
            cos = torch.nn.functional.cosine_similarity(p.grad.flatten(), grads[name].flatten(), dim=0)
            assert cos > 0.98, name
    assert all(p.dtype == torch.float32 for p in mixed.params)  # what AdamW updates
    if lora:  # the frozen base is stored in bf16, so no forward casts it
        assert {p.dtype for p in mixed.model.parameters() if not p.requires_grad} == {torch.bfloat16}


def test_autocast_choice():
    from tutorloop import hardware

    assert hardware.autocast_dtype("off") is None
    assert hardware.autocast_dtype("bfloat16") == torch.bfloat16
    expected = torch.bfloat16 if hardware.auto_dtype("cpu") == "bfloat16" else None
    assert hardware.autocast_dtype("auto") == expected


@pytest.mark.parametrize("lora", [LORA, None], ids=["lora", "full"])
def test_dpo_under_eager_attention_matches_unpacked_rows(tiny_lm_dir, lora):
    """Defect 13c: eager attention adds a boolean 4D mask to the scores (+1 / +0) instead of masking,
    so packed pairs must not run there: the pair log-probs equal their own unpacked rows."""
    trainer = _trainer(tiny_lm_dir, {"dpo": 1}, lora=lora)
    for model in (trainer.model, trainer.reference):
        if model is not None:
            model.set_attn_implementation("eager")
    assert trainer.model.config._attn_implementation == "eager"
    with torch.no_grad():
        for p in trainer.params[:2]:
            p.add_(0.05)
    pairs = (pair(PROMPT, "The answer is 5.", "It is six, I think."), pair(PROMPTS[1], "15", "The answer is 50."))
    chunk = encode_lessons(pairs, trainer.max_seq_len, pairs=True)
    with torch.no_grad():
        policy_B, ref_B = trainer._pair_logps(chunk)
        rows = [c for c, _ in chunk] + [r for _, r in chunk]
        want = [trainer._forward([row]) for row in rows]  # one row a forward: no mask to get wrong
    from tutorloop.objectives import losses

    want_B = torch.cat([losses.sequence_logps(losses.token_logprobs(lg, lb), m) for lg, lb, m in want])
    torch.testing.assert_close(policy_B, want_B, atol=1e-5, rtol=1e-5)
    assert ref_B is not None and not torch.allclose(ref_B, want_B)


def test_dropout_is_off_in_training(tiny_lm_dir, tmp_path):
    """Defect 13g: a model configured with attention dropout 0.5 gives the same loss and gradient on
    every pass in training mode (TRL disables dropout; log-prob ratios need it off)."""
    import json
    import shutil

    model_dir = tmp_path / "dropout"
    shutil.copytree(tiny_lm_dir, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps(config | {"attention_dropout": 0.5}))
    trainer = _trainer(model_dir, {"sft": 1})
    batch = (sft(PROMPT, "2 + 3 = 5. The answer is 5."),)
    trainer.model.train()
    first, grads = trainer.accumulate(batch)["loss/sft"], [p.grad.clone() for p in trainer.params]
    trainer.optimizer.zero_grad(set_to_none=True)
    second = trainer.accumulate(batch)["loss/sft"]
    assert first == second
    for got, want in zip((p.grad for p in trainer.params), grads):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_lesson_weight_scales_its_tokens(tiny_lm_dir):
    """The lesson weight is read (issue 13: `SFTExample.weight` never was): weight 0.5 gives half the
    loss; a per-token weight of 0 drops that token's NLL but not its unit (the count of units stays
    the target's tokens)."""
    trainer = _trainer(tiny_lm_dir, {"sft": 1})
    full = trainer.accumulate((sft(PROMPT, "The answer is 5."),))["loss/sft"]
    half = trainer.accumulate((sft(PROMPT, "The answer is 5.", weight=0.5),))["loss/sft"]
    assert half == pytest.approx(full / 2, rel=1e-6)
    lesson = sft(PROMPT, "5")  # "5" + EOS
    first_only = trainer.accumulate((Lesson("sft", lesson.prompt_ids, lesson.target_ids[:1]),))["loss/sft"]
    masked = trainer.accumulate((Lesson("sft", lesson.prompt_ids, lesson.target_ids, token_weights=(1.0, 0.0)),))
    assert masked["loss/sft"] == pytest.approx(first_only / 2, rel=1e-5)  # same NLL sum, twice the units


def test_pg_with_reference_kl_trains_and_is_zero_without_advantage(tiny_lm_dir):
    """`pg` on the student's samples: advantage 0 and no KL term give loss 0; a positive advantage
    and k3 KL to the (frozen initial) reference train, and the KL is 0 before the first update."""
    from dataclasses import replace

    examples = _opd_examples(tiny_lm_dir)
    zero = tuple(replace(e, objective="pg", advantage=0.0) for e in examples)
    assert _trainer(tiny_lm_dir, {"pg": 1}).accumulate(zero)["loss/pg"] == 0.0
    trainer = _trainer(tiny_lm_dir, {"pg": {"kl_coef": 0.1, "kl_estimator": "k3"}})
    batch = tuple(replace(e, objective="pg", advantage=1.0) for e in examples)
    first = asyncio.run(trainer.step(batch))
    assert abs(first["pg/kl_ref"]) < 1e-6 and first["loss/pg"] == pytest.approx(-1.0, abs=1e-4)  # rho = 1, A = 1
    second = asyncio.run(trainer.step(batch))
    assert second["pg/kl_ref"] > 0 and second["policy_version"] == 2.0


@pytest.mark.parametrize("name", ["sft", "kd"])
def test_the_kl_anchor_is_zero_at_the_start_and_holds_the_policy_near_the_reference(tiny_lm_dir, tiny_teacher_dir, name):
    """`ref_kl`: the exact KL to the initial policy at the trained positions. It is 0 before the
    first update (LoRA's B starts at 0), enters the loss with its coefficient, and after the same
    steps leaves the anchored student nearer the reference than a student trained without it."""
    batch = ((sft(PROMPT, "The answer is 5."), sft(PROMPTS[1], "15")) if name == "sft"
             else _opd_examples(tiny_lm_dir, tiny_teacher_dir))  # another model: kd pulls the student away
    # Near the reference the KL is quadratic in the drift, so its pull is weak against a random
    # model's NLL (~5 nats a token) unless the coefficient is large.
    free, anchored = _trainer(tiny_lm_dir, {name: {"ref_kl": 1e-9}}), _trainer(tiny_lm_dir, {name: {"ref_kl": 50.0}})
    first = asyncio.run(anchored.step(batch))
    assert abs(first[f"{name}/kl_ref"]) < 1e-9
    asyncio.run(free.step(batch))
    for _ in range(5):
        held, drifted = asyncio.run(anchored.step(batch)), asyncio.run(free.step(batch))
    assert 0 < held[f"{name}/kl_ref"] < 0.5 * drifted[f"{name}/kl_ref"]
    plain = _trainer(tiny_lm_dir, {name: 1.0})  # same weights as `anchored` now: loss = base + 50 KL
    plain.model.load_state_dict(anchored.model.state_dict())
    with_anchor, without = anchored.accumulate(batch), plain.accumulate(batch)
    assert with_anchor[f"loss/{name}"] == pytest.approx(without[f"loss/{name}"] + 50.0 * with_anchor[f"{name}/kl_ref"], rel=1e-4)


def test_kl_ref_holds_retained_texts_at_the_reference_without_learning_them(tiny_lm_dir):
    """`kl_ref` (tasks.retain): only the exact KL to the initial policy at a retained text's
    positions, no NLL of the text. It is 0 before the first update; while SFT moves the student, a
    student that also takes `kl_ref` on other prompts stays nearer the reference on them, and the
    logged loss is the per-token mean of KL(pi_theta || pi_ref) computed here by hand from the two
    models' logits."""
    retained = tuple(Lesson("kl_ref", ENCODE.prompt(p), ENCODE.text(t), policy_version=None)
                     for p, t in zip(PROMPTS[1:], ("10 + 5 = 15, so 15.", "Seven.")))
    batch = (sft(PROMPT, "The answer is 5."), sft(PROMPT, "2 + 3 = 5. The answer is 5.")) + retained
    free, held = _trainer(tiny_lm_dir, {"sft": 1.0, "kl_ref": 1e-9}), _trainer(tiny_lm_dir, {"sft": 1.0, "kl_ref": 50.0})
    first = asyncio.run(held.step(batch))
    assert abs(first["loss/kl_ref"]) < 1e-9 and first["kl_ref/tokens"] == sum(len(x.target_ids) for x in retained)
    asyncio.run(free.step(batch))
    for _ in range(5):
        kept, drifted = asyncio.run(held.step(batch)), asyncio.run(free.step(batch))
    assert 0 < kept["loss/kl_ref"] < 0.5 * drifted["loss/kl_ref"]
    assert kept["loss/sft"] < first["loss/sft"]  # the task still trains
    model = held.model
    by_hand = []
    with torch.no_grad():
        for lesson in retained:
            ids = torch.tensor([lesson.prompt_ids + lesson.target_ids])
            logits = model(input_ids=ids).logits[0, len(lesson.prompt_ids) - 1:-1].double()
            with model.disable_adapter():
                ref = model(input_ids=ids).logits[0, len(lesson.prompt_ids) - 1:-1].double()
            p, q = logits.log_softmax(-1), ref.log_softmax(-1)
            by_hand += (p.exp() * (p - q)).sum(-1).tolist()
    assert held.accumulate(retained)["loss/kl_ref"] == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-3)
