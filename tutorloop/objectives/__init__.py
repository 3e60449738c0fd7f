"""The objective registry: each objective's loss, unit, lesson record, needs and parameter model.

The trainer, the lesson buffer, the data-parallel unit counts and config validation all read this
table; outside it only configs, lesson construction in envs and tests spell an objective's name
(ARCHITECTURE §7). Adding an objective costs its loss and one `register` call.

A loss takes the tensors the trainer computed for one micro-batch (`TokenInputs` or `PairInputs`)
and the objective's parameters, and returns (loss_sum, metric_sums): sums over the objective's
units, which the trainer divides by the unit count of the whole step (METHODS §4.6 mixer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

if TYPE_CHECKING:  # config reads this registry, and `import tutorloop.config` must not load torch
    from torch import Tensor

Unit = Literal["tokens", "pairs", "sequences"]


class Params(BaseModel):
    """Every objective's parameters start with its weight in the mix."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)
    weight: float = Field(1.0, ge=0.0, allow_inf_nan=False)
    """Scale of this objective after its own unit normalization; 0 skips its forward pass."""
    schedule: tuple[tuple[int, float], ...] = Field((), exclude_if=lambda points: not points)
    """The weight as a schedule over rounds instead: (round, weight) points, linear between them and
    held before the first and after the last, e.g. [[0, 1.0], [10, 0.1]] anneals 1 to 0.1 over ten
    rounds. Empty: `weight` every round."""

    @field_validator("schedule")
    @classmethod
    def _points(cls, points: tuple[tuple[int, float], ...]) -> tuple[tuple[int, float], ...]:
        rounds = [r for r, _ in points]
        if any(r < 0 for r in rounds) or rounds != sorted(set(rounds)):
            raise ValueError(f"rounds must be >= 0 and increasing (got {rounds})")
        if any(not (w >= 0 and w != float("inf")) for _, w in points):  # also refuses nan
            raise ValueError(f"weights must be finite and >= 0 (got {[w for _, w in points]})")
        return points

    @model_validator(mode="after")
    def _weight_or_schedule(self) -> Params:
        if self.schedule and "weight" in self.model_fields_set:
            raise ValueError("give `weight` or `schedule`, not both")
        return self

    @property
    def ever_positive(self) -> bool:
        """Whether this objective trains in some round (its lessons are worth making)."""
        return any(w > 0 for _, w in self.schedule) if self.schedule else self.weight > 0

    def weight_at(self, round_index: int) -> float:
        """This objective's weight in round `round_index`."""
        if not self.schedule:
            return self.weight
        (r0, w0), (r1, w1) = self.schedule[0], self.schedule[-1]
        if round_index <= r0 or round_index >= r1:
            return w0 if round_index <= r0 else w1
        (a, wa), (b, wb) = next((p, q) for p, q in zip(self.schedule, self.schedule[1:]) if p[0] <= round_index <= q[0])
        return wa + (wb - wa) * (round_index - a) / (b - a)

    @property
    def uses_reference(self) -> bool:
        """Whether the loss reads the frozen initial policy (LoRA: adapters off; else a copy)."""
        return False

    @property
    def reads_ref_logits(self) -> bool:
        """Whether it reads the reference's whole distributions, not only the target's log-probs."""
        return False


class DPOParams(Params):
    beta: float = Field(0.1, gt=0.0, allow_inf_nan=False)
    """DPO's inverse temperature (Rafailov et al. 2023); IPO's 1/(2 tau) target margin's tau."""
    loss_type: Literal["sigmoid", "ipo", "rpo"] = "sigmoid"
    """`sigmoid` (F3), `ipo` (Azar et al. 2023) or `rpo`: sigmoid plus c_nll * NLL(chosen)."""
    c_nll: float = Field(1.0, ge=0.0, allow_inf_nan=False)
    """rpo only: weight of the chosen side's per-token NLL (TRL's `rpo_alpha`)."""

    @property
    def uses_reference(self) -> bool:
        return True


class RediParams(Params):
    alpha: float = Field(0.8, ge=0.0, le=1.0)
    """Weight of the rejected side's length-normalized log-prob (REDI, METHODS F4)."""


class AnchoredParams(Params):
    ref_kl: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    """Coefficient of a KL anchor to the reference (the initial policy: LoRA adapters off): the exact
    KL(pi_theta || pi_ref) over the whole vocabulary at every trained position, summed like the loss.
    It holds the distribution of the next token near the reference's wherever the target does not
    pull it, so training on one task's style costs less of the model's behaviour elsewhere."""

    @property
    def uses_reference(self) -> bool:
        return self.ref_kl > 0

    reads_ref_logits = uses_reference


class KLRefParams(Params):
    """`kl_ref`: only the KL anchor, on texts the run does not otherwise train on (`tasks.retain`)."""

    @property
    def uses_reference(self) -> bool:
        return True

    reads_ref_logits = uses_reference


class KDParams(AnchoredParams):
    beta: float = Field(0.5, ge=0.0, le=1.0)
    """Generalized-JSD interpolation: 0 = forward KL(teacher||student), 1 = reverse KL (TRL GKD)."""
    temperature: float = Field(1.0, gt=0.0, allow_inf_nan=False)
    """Applied to the teacher's and the student's distributions alike (TRL GKD)."""
    top_k: int = Field(20, ge=1, le=1024)
    """Teacher log-probs kept per position; the rest of both distributions goes to one tail bucket."""


class OPDPGParams(Params):
    clip_low: float = Field(0.2, ge=0.0, le=1.0)
    """PPO clip below: the ratio is clipped to [1 - clip_low, 1 + clip_high]."""
    clip_high: float = Field(0.2, ge=0.0, allow_inf_nan=False)
    """PPO clip above (DAPO's clip-higher when larger than clip_low)."""


class PGParams(OPDPGParams):
    kl_coef: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    """Coefficient of the per-token KL estimate to the reference policy; 0 reads no reference."""
    kl_estimator: Literal["k2", "k3"] = "k3"
    """Per-token KL(pi_theta || pi_ref) estimator (METHODS F6; Schulman's k2, k3)."""
    shaping_gamma: float = Field(0.1, gt=0.0, allow_inf_nan=False)
    """gamma of f(p) = p / (p + gamma), the shaped term that trains off-policy lessons (teacher
    guidance, no behaviour log-probs) instead of the clipped ratio (METHODS F7; AMPO's 0.1)."""

    @property
    def uses_reference(self) -> bool:
        return self.kl_coef > 0


class KLTeacherParams(Params):
    estimator: Literal["k2", "k3"] = "k2"
    """Per-token KL(pi_theta || pi_teacher) estimator on the policy's own samples (KDRL prefers k2)."""


@dataclass(frozen=True)
class TokenInputs:
    """One micro-batch of token- or sequence-unit lessons, right-aligned as `forward_targets` gives.
    `mask_B_T` is the per-token weight times the lesson weight (0 on padding). Optional fields are
    filled when the objective `needs` them."""

    logits_B_T_V: Tensor
    logp_B_T: Tensor
    mask_B_T: Tensor
    teacher_logp_B_T: Tensor | None = None
    teacher_topk_ids_B_T_K: Tensor | None = None
    teacher_topk_logp_B_T_K: Tensor | None = None
    behavior_logp_B_T: Tensor | None = None
    advantage_B: Tensor | None = None
    off_policy_B: Tensor | None = None
    """Rows whose target no policy sampled (`Lesson.off_policy`); read with `advantage_B`."""
    ref_logp_B_T: Tensor | None = None
    ref_logits_B_T_V: Tensor | None = None
    """The reference's logits at the same positions, filled when the params `uses_reference`."""


@dataclass(frozen=True)
class PairInputs:
    """One micro-batch of pairs: summed completion log-probs, target lengths and lesson weights."""

    chosen_logp_B: Tensor
    rejected_logp_B: Tensor
    chosen_len_B: Tensor
    rejected_len_B: Tensor
    weight_B: Tensor
    ref_chosen_logp_B: Tensor | None = None
    ref_rejected_logp_B: Tensor | None = None


Loss = Callable[[Any, Any], "tuple[Tensor, dict[str, Tensor]]"]


@dataclass(frozen=True)
class Objective:
    name: str
    loss: Loss
    unit: Unit
    params: type[Params] = Params
    needs: frozenset[str] = frozenset()
    """`Lesson` fields it reads beyond prompt and target: rejected_ids, teacher_scores,
    behavior_logprobs, advantage."""
    on_policy: bool = False
    """Its lessons are the policy's own samples: the buffer drops them once stale."""
    untempered_sampling: bool = False
    """The policy must sample at temperature 1 and top_p 1 (its log-probs are the sampler's)."""


REGISTRY: dict[str, Objective] = {}


def register(objective: Objective) -> Objective:
    REGISTRY[objective.name] = objective
    return objective


def parse(raw: Mapping[str, Any]) -> dict[str, Params]:
    """`trainer.objectives` as written (a bare number is the weight) -> validated parameters.
    Errors are one line naming the objective and its field."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"expected a mapping of objective names, got {raw!r}")
    out = {}
    for name, value in raw.items():
        if name not in REGISTRY:
            raise ValueError(f"unknown objective {name!r}; known: {sorted(REGISTRY)}")
        if isinstance(value, Params):
            out[name] = value
            continue
        spec = {"weight": value} if isinstance(value, (int, float)) and not isinstance(value, bool) else value
        try:
            out[name] = REGISTRY[name].params.model_validate(spec)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            got = f" (got {err['input']!r})" if not isinstance(err.get("input"), (dict, list)) else ""
            raise ValueError(f"{name}{'.' + field if field else ''}: {err['msg']}{got}") from None
    if not any(p.ever_positive for p in out.values()):
        raise ValueError("at least one objective needs a weight > 0")
    return out


def active(objectives: Mapping[str, Params]) -> dict[str, Params]:
    """The objectives that train in some round (a schedule counts where any of its weights is > 0)."""
    return {name: p for name, p in objectives.items() if p.ever_positive}


def at_round(objectives: Mapping[str, Params], round_index: int) -> dict[str, float]:
    """Each scheduled objective's weight in round `round_index` ({} when none is scheduled)."""
    return {name: p.weight_at(round_index) for name, p in objectives.items() if p.schedule}


def with_weights(objectives: Mapping[str, Params], weights: Mapping[str, float] | None) -> dict[str, Params]:
    """`objectives` with the given weights in place of their own and of their schedules; a scheduled
    objective that `weights` leaves out takes its round-0 weight."""
    weights = weights or {}
    return {name: p.model_copy(update={"weight": weights.get(name, p.weight_at(0)), "schedule": ()})
            if p.schedule or name in weights else p for name, p in objectives.items()}


def needing(objectives: Mapping[str, Params], need: str) -> list[str]:
    """Names of the active objectives that read lesson field `need`."""
    return [name for name in active(objectives) if need in REGISTRY[name].needs]


def teacher_top_k(objectives: Mapping[str, Params]) -> int:
    """How many top-k log-probs the teacher must score per token; 0: no objective reads teacher
    scores. One where only the sampled token's log-prob is read (the scorer's minimum)."""
    return max((getattr(p, "top_k", 1) for name, p in active(objectives).items()
                if "teacher_scores" in REGISTRY[name].needs), default=0)


def unit_count(name: str, targets: list[int]) -> int:
    """`targets`: each lesson's trained target length (a pair: its chosen length)."""
    return sum(targets) if REGISTRY[name].unit == "tokens" else len(targets)


# --------------------------------------------------------------------------------------------- #
# The objectives
# --------------------------------------------------------------------------------------------- #


def _sft(x: TokenInputs, p: AnchoredParams) -> tuple[Tensor, dict[str, Tensor]]:
    from tutorloop.objectives import losses

    return _anchored(losses.sft_nll_sum(x.logp_B_T, x.mask_B_T), {}, x, p)


def _kd(x: TokenInputs, p: KDParams) -> tuple[Tensor, dict[str, Tensor]]:
    from tutorloop.objectives import losses

    assert x.teacher_topk_ids_B_T_K is not None and x.teacher_topk_logp_B_T_K is not None
    loss = losses.opd_jsd_sum(x.logits_B_T_V, x.teacher_topk_ids_B_T_K, x.teacher_topk_logp_B_T_K, x.mask_B_T,
                              beta=p.beta, temperature=p.temperature)
    return _anchored(loss, {"kl/teacher_student": _k1_to_teacher(x)}, x, p)


def _anchored(loss: Tensor, metrics: dict[str, Tensor], x: TokenInputs,
              p: AnchoredParams) -> tuple[Tensor, dict[str, Tensor]]:
    """`loss` plus `ref_kl` times the KL anchor (logged as `kl_ref` whenever it is on)."""
    from tutorloop.objectives import losses

    if p.ref_kl == 0:
        return loss, metrics
    assert x.ref_logits_B_T_V is not None
    kl = losses.full_kl_sum(x.logits_B_T_V, x.ref_logits_B_T_V, x.mask_B_T)
    return loss + p.ref_kl * kl, metrics | {"kl_ref": kl.detach()}


def _kl_ref(x: TokenInputs, p: KLRefParams) -> tuple[Tensor, dict[str, Tensor]]:
    """Learning without Forgetting (Li & Hoiem 2016), the initial policy as the old model: the exact
    KL(pi_theta || pi_ref) at every position of a retained text, no NLL of it. The text only supplies
    contexts of another kind than the task's, where the reference's next-token distribution is held."""
    from tutorloop.objectives import losses

    assert x.ref_logits_B_T_V is not None
    return losses.full_kl_sum(x.logits_B_T_V, x.ref_logits_B_T_V, x.mask_B_T), {}


def _k1_to_teacher(x: TokenInputs) -> Tensor:
    """k1 estimate of KL(student || teacher) on the student's own samples, for logging."""
    assert x.teacher_logp_B_T is not None
    return ((x.logp_B_T.detach() - x.teacher_logp_B_T) * (x.mask_B_T != 0)).sum()


def _opd_pg(x: TokenInputs, p: OPDPGParams) -> tuple[Tensor, dict[str, Tensor]]:
    from tutorloop.objectives import pg_losses

    assert x.behavior_logp_B_T is not None and x.teacher_logp_B_T is not None
    loss, kl = pg_losses.opd_pg_sum(x.logp_B_T, x.behavior_logp_B_T, x.teacher_logp_B_T, x.mask_B_T,
                                    clip_low=p.clip_low, clip_high=p.clip_high)
    return loss, {"kl/teacher_student": kl}


def _pg(x: TokenInputs, p: PGParams) -> tuple[Tensor, dict[str, Tensor]]:
    """GRPO's clipped surrogate (F5) on the policy's own samples; an off-policy lesson's tokens take
    the shaped term of F7 instead, in the same token sum (one token-mean over both, as AMPO's)."""
    from tutorloop.objectives import pg_losses

    assert x.behavior_logp_B_T is not None and x.advantage_B is not None
    advantage_B_T = x.advantage_B.unsqueeze(-1).expand_as(x.logp_B_T)
    off_B_1 = None if x.off_policy_B is None else x.off_policy_B.unsqueeze(-1)
    on_mask_B_T = x.mask_B_T if off_B_1 is None else x.mask_B_T * ~off_B_1
    loss, clipped = pg_losses.clipped_pg_sum(x.logp_B_T, x.behavior_logp_B_T, advantage_B_T, on_mask_B_T,
                                             clip_low=p.clip_low, clip_high=p.clip_high)
    metrics = {"clipped_tokens": clipped}
    if off_B_1 is not None and bool(off_B_1.any()):
        off_mask_B_T = x.mask_B_T * off_B_1
        loss = loss + pg_losses.shaped_off_policy_pg_sum(x.logp_B_T, advantage_B_T, off_mask_B_T, gamma=p.shaping_gamma)
        metrics["off_policy_tokens"] = (off_mask_B_T != 0).sum().detach()
    if p.kl_coef > 0:
        assert x.ref_logp_B_T is not None
        kl = pg_losses.kl_estimate_sum(x.logp_B_T, x.ref_logp_B_T, x.mask_B_T, estimator=p.kl_estimator)
        loss = loss + p.kl_coef * kl
        metrics["kl_ref"] = kl.detach()
    return loss, metrics


def _kl_teacher(x: TokenInputs, p: KLTeacherParams) -> tuple[Tensor, dict[str, Tensor]]:
    """KDRL's KD term (METHODS C2): sum_t k(log pi_theta(y_t) - log pi_T(y_t)) on the student's samples;
    its coefficient beta(t) is this objective's weight or `schedule`."""
    from tutorloop.objectives import pg_losses

    assert x.teacher_logp_B_T is not None
    loss = pg_losses.kl_estimate_sum(x.logp_B_T, x.teacher_logp_B_T, x.mask_B_T, estimator=p.estimator)
    return loss, {"kl/teacher_student": _k1_to_teacher(x)}


def _dpo(x: PairInputs, p: DPOParams) -> tuple[Tensor, dict[str, Tensor]]:
    from tutorloop.objectives import losses

    assert x.ref_chosen_logp_B is not None and x.ref_rejected_logp_B is not None
    logps = (x.chosen_logp_B, x.rejected_logp_B, x.ref_chosen_logp_B, x.ref_rejected_logp_B)
    if p.loss_type == "ipo":
        loss_B = losses.ipo_loss(*logps, x.chosen_len_B, x.rejected_len_B, beta=p.beta)
    else:
        loss_B = losses.dpo_loss(*logps, beta=p.beta)
    if p.loss_type == "rpo":
        loss_B = loss_B + p.c_nll * losses.rpo_nll(x.chosen_logp_B, x.chosen_len_B)
    chosen_B, rejected_B = losses.dpo_rewards(*logps, beta=p.beta)
    metrics = {"margin": (chosen_B - rejected_B).sum(), "accuracy": (chosen_B > rejected_B).float().sum(),
               "chosen_logp": x.chosen_logp_B.detach().sum(), "rejected_logp": x.rejected_logp_B.detach().sum()}
    return (x.weight_B * loss_B).sum(), metrics


def _redi(x: PairInputs, p: RediParams) -> tuple[Tensor, dict[str, Tensor]]:
    from tutorloop.objectives import losses

    loss_B = losses.redi_loss(x.chosen_logp_B, x.rejected_logp_B, x.chosen_len_B, x.rejected_len_B, alpha=p.alpha)
    return (x.weight_B * loss_B).sum(), {"chosen_logp": x.chosen_logp_B.detach().sum(),
                                         "rejected_logp": x.rejected_logp_B.detach().sum()}


register(Objective("sft", _sft, "tokens", AnchoredParams))
register(Objective("dpo", _dpo, "pairs", DPOParams, frozenset({"rejected_ids"})))
register(Objective("redi", _redi, "pairs", RediParams, frozenset({"rejected_ids"})))
register(Objective("kd", _kd, "tokens", KDParams, frozenset({"teacher_scores"}), on_policy=True))
register(Objective("opd_pg", _opd_pg, "tokens", OPDPGParams, frozenset({"teacher_scores", "behavior_logprobs"}),
                   on_policy=True, untempered_sampling=True))
register(Objective("pg", _pg, "tokens", PGParams, frozenset({"behavior_logprobs", "advantage"}), on_policy=True))
register(Objective("kl_ref", _kl_ref, "tokens", KLRefParams))
register(Objective("kl_teacher", _kl_teacher, "tokens", KLTeacherParams, frozenset({"teacher_scores"}), on_policy=True))
