"""Env configs: `env:` is one episode program's knobs, chosen by `name` (a tagged union), and the
names of the agents that play its parts.

Part of the run config (`tutorloop.config` re-exports every name here). A new env adds its config
class here (to `ENV_CONFIGS` and `EnvConfig`) and its env class to `tutorloop.envs.ENVS`.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from tutorloop.agent_config import Strict

KLMask = Literal["none", "correct", "solved_group"]
"""Which samples KDRL's reward mask keeps out of `kl_teacher` (METHODS C2; the paper's exact rule is unverified)."""


InterventionPolicy = Literal["utility", "random", "least_confident"]
"""Which problems the ToM intervention env explains (METHODS E1: the method and two of its baselines)."""


class EnvConfigBase(Strict):
    """What every env config answers besides its knobs: which agent plays each part, and which parts learn."""

    trained_part: ClassVar[str] = "student"
    """The part whose learner the `trainer` shorthand describes and whose accuracy is evaluated."""

    def parts(self) -> dict[str, str]:
        """Part in this env → the agent that plays it."""
        raise NotImplementedError

    @classmethod
    def learnable_parts(cls) -> tuple[str, ...]:
        """Parts this env makes lessons for."""
        return (cls.trained_part,)

    def learning_refused(self, part: str) -> str | None:
        """Why `part` cannot learn with these knobs, if it cannot."""
        return None

    @property
    def trained(self) -> str:
        """The agent that plays the trained part."""
        return self.parts()[self.trained_part]


class CorrectionEnvConfig(EnvConfigBase):
    name: Literal["correction"] = "correction"
    """attempt → verify → teacher correction → mentor feedback → revision (`envs/correction.py`)."""
    student: str = "student"
    """The agent that attempts and revises: the one the trainer updates."""
    teacher: str = "teacher"
    """The agent that writes verified corrections (and scores the student's tokens for OPD)."""
    mentor: str = "mentor"
    """The agent that turns the teacher's diagnosis into feedback without the answer."""
    max_rounds: int = Field(1, ge=0, le=16)
    """Correction rounds per problem (teacher correction, mentor feedback, student revision)."""
    num_candidates: int = Field(1, ge=1, le=64)
    """Corrections the teacher samples per mistake; the first the verifier accepts is kept."""
    feedback_candidates: int = Field(1, ge=1, le=16)
    """Feedback replies the mentor samples per mistake (one call, same prompt); the student revises
    after each, and the episode continues from an accepted revision if any. 1: one feedback, one
    revision. Above 1 the mentor's feedback can be judged by its outcome (`envs/mentor_lessons.py`)."""
    max_reply_chars: int = Field(4000, ge=16)
    """Teacher and mentor replies are cut to this many characters before anyone reads them, so a
    runaway reply cannot overflow the next prompt (counted as `episodes/truncated_replies`)."""
    reference_targets: bool = True
    """Where no teacher correction verifies, the reference solution stands in for it (so the mentor
    has something to advise from); true: it is also an SFT target and a DPO "chosen". False keeps the
    targets to text a model wrote (verified corrections, accepted revisions), in a model's own style."""

    def parts(self) -> dict[str, str]:
        """Part in this env → the agent that plays it."""
        return {"student": self.student, "teacher": self.teacher, "mentor": self.mentor}

    @classmethod
    def learnable_parts(cls) -> tuple[str, ...]:
        """The student's lessons, and the mentor's from the outcomes of its feedback."""
        return ("student", "mentor")

    def learning_refused(self, part: str) -> str | None:
        """Why `part` cannot learn with these knobs, if it cannot."""
        if part == "mentor" and self.feedback_candidates < 2:
            return ("env.feedback_candidates: the mentor learns by comparing what its feedback candidates led to; "
                    "set it to 2 or more")
        return None


class DialogueEnvConfig(EnvConfigBase):
    name: Literal["dialogue"] = "dialogue"
    """MathDial tutoring: a tutor and a simulated student talk, a tagger labels the tutor's moves
    (`envs/dialogue.py`)."""
    tutor: str = "tutor"
    """The agent that tutors: the one the trainer updates."""
    sim_student: str = "sim_student"
    """The agent that plays the student with a planted wrong solution."""
    tagger: str = "tagger"
    """The agent that labels each tutor turn with a MathDial move."""
    max_turns: int = Field(7, ge=1, le=16)
    """Student replies after its opening explanation (MathDial's k); a dialogue also ends as soon as
    the student states the answer."""
    telling_penalty: float = Field(0.5, ge=0.0)
    """λ in the per-dialogue reward success − λ·telling (recorded on every dialogue; the tutor trains
    on it through the `pg` objective)."""
    num_candidates: int = Field(1, ge=1, le=64)
    """Tutor replies sampled per turn; the first is said, the others that state the answer become
    DPO rejects."""
    recorded_dialogues: bool = True
    """tasks.source=mathdial only: the recorded dialogues of the training problems become lessons
    before round 0, under the same rules as simulated ones."""

    def parts(self) -> dict[str, str]:
        """Part in this env → the agent that plays it."""
        return {"tutor": self.tutor, "sim_student": self.sim_student, "tagger": self.tagger}

    trained_part: ClassVar[str] = "tutor"


class RolloutsEnvConfig(EnvConfigBase):
    name: Literal["rollouts"] = "rollouts"
    """G samples per problem, a verifier reward each, group-normalised advantages and optional
    teacher scores (`envs/rollouts.py`): the base of GRPO-style methods."""
    student: str = "student"
    """The agent that samples: the one the trainer updates."""
    teacher: str | None = None
    """An agent that scores every sample's tokens under the reference solution (OPD lessons); null: none."""
    group_size: int = Field(4, ge=1, le=256)
    """G: samples per problem, drawn in one call; the advantages are normalised within the group."""
    top_k: int = Field(20, ge=1, le=1024)
    """Teacher log-probs kept per position when a teacher scores."""
    kl_teacher_mask: KLMask = "none"
    """KDRL's reward-guided KD mask: `correct` makes no `kl_teacher` lesson of a correct sample (the
    reported rule, response level), `solved_group` none of any sample of a group with a correct one
    (the group-level reading), `none` one of every scored sample. Read only with `kl_teacher`."""

    def parts(self) -> dict[str, str]:
        """Part in this env → the agent that plays it."""
        return {"student": self.student} | ({"teacher": self.teacher} if self.teacher else {})


class AmpoEnvConfig(EnvConfigBase):
    name: Literal["ampo"] = "ampo"
    """AMPO (METHODS C3): G student samples; a group that all fail gets the k teacher solutions the
    student comprehends best in place of k failed samples, trained off-policy (`envs/ampo.py`)."""
    student: str = "student"
    """The agent that samples: the one the trainer updates (and whose comprehension ranks the solutions)."""
    teachers: tuple[str, ...] = Field(("teacher",), min_length=1)
    """The agents that write guidance; parts `teacher`, `teacher_2`, ... (AMPO's several peer teachers)."""
    group_size: int = Field(8, ge=2, le=256)
    """G: student samples per problem (AMPO's n = 8)."""
    samples: int = Field(2, ge=1, le=64)
    """Solutions each teacher samples, in one call, for a problem whose group all failed; K is
    `samples` x the number of teachers, of which the verified ones are candidates."""
    temperature: float = Field(0.7, gt=0.0, le=5.0)
    """The teachers' sampling temperature (AMPO's solutions are precomputed; ours are sampled)."""
    privileged: bool = True
    """The teachers solve with the reference solution in their context (`prompts.privileged`): the
    embedded teacher's only edge over a student of its own size. false: the bare prompt."""
    num_guidance: int = Field(2, ge=1, le=64)
    """k (AMPO's `num_off_policy_targets` = 2): how many candidates replace failed samples."""
    norm_adv_by_std: bool = False
    """Divide the group advantages r - mean(r) by std(r) + eps (GRPO); AMPO does not
    (`norm_adv_by_std_in_grpo=False`)."""

    @model_validator(mode="after")
    def _room_for_guidance(self) -> AmpoEnvConfig:
        if self.num_guidance >= self.group_size:
            raise ValueError(f"num_guidance: {self.num_guidance} must be below group_size ({self.group_size}), "
                             "so the mixed group keeps a failed sample to compare the guidance with")
        if len(set(self.teachers)) != len(self.teachers):
            raise ValueError(f"teachers: each agent at most once (got {list(self.teachers)})")
        return self

    def parts(self) -> dict[str, str]:
        """Part in this env → the agent that plays it."""
        return {"student": self.student} | {teacher_part(i): t for i, t in enumerate(self.teachers)}


def teacher_part(i: int) -> str:
    """The part of the i-th guidance teacher: `teacher` (as other envs name it), then `teacher_2`, ..."""
    return "teacher" if i == 0 else f"teacher_{i + 1}"


class DistillEnvConfig(EnvConfigBase):
    name: Literal["distill"] = "distill"
    """A teacher's verified demonstrations (Fine-tune-CoT) and its scores of the student's samples or
    of the reference solution behind a λ gate (GKD) (`envs/distill.py`)."""
    student: str = "student"
    """The agent that learns (and samples, on GKD's on-policy side)."""
    teacher: str = "teacher"
    """The agent that demonstrates and scores."""
    samples: int = Field(4, ge=0, le=256)
    """D: teacher solutions sampled per problem in one call; the verified ones are the student's SFT
    targets. 0: no demonstrations (GKD alone). Fine-tune-CoT's D grid is unverified (METHODS §5)."""
    temperature: float = Field(0.7, gt=0.0, le=5.0)
    """T: the teacher's sampling temperature for its D demonstrations (diverse reasoning needs T > 0;
    the paper's value is unverified, METHODS §5)."""
    on_policy_fraction: float = Field(0.5, ge=0.0, le=1.0)
    """λ (TRL's `lmbda`, default 0.5): the share of problems whose `kd` lesson is the student's own
    sample scored by the teacher; the others' is the reference solution scored by the teacher. A
    seeded coin per problem (`envs/distill.py`). Read only when the student has a `kd` objective."""
    privileged: bool = True
    """The teacher demonstrates and scores with the reference solution in its context: the embedded
    teacher's only edge over a student of its own size. false: the student's bare prompt, as in
    Fine-tune-CoT and GKD, for a teacher that is a stronger model."""
    step_by_step: bool = False
    """Distilling step-by-step (METHODS A2): each verified demonstration becomes two SFT lessons, the
    answer line under "[label] <problem>" and the rationale under "[rationale] <problem>", and the
    student is evaluated on the label prompt only. false: one lesson per demonstration (Fine-tune-CoT)."""
    label_weight: float = Field(0.5, ge=0.0, le=1.0)
    """α: the label lessons' weight; the rationale lessons get 1 − α (the paper's code recommends 0.5).
    Read only with `step_by_step`."""
    score_demonstrations: bool = False
    """Mentor-KD's soft labels (METHODS A3): the teacher also scores each of its verified
    demonstrations as the student's SFT target (the student's ids, under its bare prompt), and these
    scores are the student's `kd` lessons, on the very targets of its `sft` ones; the λ gate is off.
    false: the gated sequence is scored (GKD). Read only when the student has a `kd` objective."""

    @model_validator(mode="after")
    def _scored_demonstrations_exist(self) -> DistillEnvConfig:
        if self.score_demonstrations and not self.samples:
            raise ValueError("score_demonstrations: the teacher scores its verified demonstrations, and env.samples "
                             "is 0; set env.samples >= 1")
        if self.score_demonstrations and self.step_by_step:
            raise ValueError("score_demonstrations: its kd lessons share the plain demonstrations' targets, which "
                             "step_by_step splits into label and rationale tasks; set one of them false")
        return self

    def parts(self) -> dict[str, str]:
        """Part in this env → the agent that plays it."""
        return {"student": self.student, "teacher": self.teacher}


class TailoredEnvConfig(EnvConfigBase):
    name: Literal["tailored"] = "tailored"
    """Tailored learning (METHODS B1): the student sits an exam; only its wrong items get a teacher
    rationale written for that mistake, which the student then learns (`envs/tailored.py`)."""
    student: str = "student"
    """The agent that sits the exam: the one the trainer updates."""
    teacher: str = "teacher"
    """The agent that sees the student's wrong attempt and the gold answer and writes a correct rationale."""
    num_candidates: int = Field(1, ge=1, le=64)
    """Rationales the teacher samples per wrong item in one call; the verified ones are all kept
    (the paper keeps several correct rationales per question)."""
    prefix_weight: float = Field(0.1, ge=0.0, le=1.0)
    """Loss weight of the prompt tokens the rationale is trained after (Learn-to-Reason's `mle_w` =
    0.1, METHODS F1/B1): the prompt is part of the SFT target at this weight; 0: prompt untrained."""

    def parts(self) -> dict[str, str]:
        """Part in this env → the agent that plays it."""
        return {"student": self.student, "teacher": self.teacher}


class FirstErrorEnvConfig(EnvConfigBase):
    name: Literal["first_error"] = "first_error"
    """SuperCorrect's Stage 2: the teacher names the first wrong step of a wrong attempt and corrects
    it; pairs share the student's steps before it as context (`envs/first_error.py`)."""
    student: str = "student"
    """The agent that attempts: the one the trainer updates."""
    teacher: str = "teacher"
    """The agent that locates the first wrong step and writes its correction (it sees the reference)."""
    max_reply_chars: int = Field(4000, ge=16)
    """The teacher's reply is cut here before it is parsed (a runaway reply cannot become a target)."""

    def parts(self) -> dict[str, str]:
        """Part in this env → the agent that plays it."""
        return {"student": self.student, "teacher": self.teacher}


class RLTEnvConfig(EnvConfigBase):
    name: Literal["rlt"] = "rlt"
    """RLT (METHODS D1): the teacher sees the problem and its solution and writes an explanation; a
    frozen student's likelihood of the solution after it is the teacher's reward (`envs/rlt.py`)."""
    teacher: str = "teacher"
    """The agent that explains: the one the trainer updates."""
    student: str = "student"
    """The frozen agent that scores the solution given the explanation (same tokenizer as the teacher)."""
    group_size: int = Field(4, ge=1, le=256)
    """G: explanations sampled per problem in one call; the advantages are normalised within the group."""
    solution_coef: float = Field(1.0, allow_inf_nan=False)
    """Weight of mean_t log pi_S(s_t | q, e, s_<t) in the reward."""
    solution_min_coef: float = Field(0.01, allow_inf_nan=False)
    """Weight of min_t log pi_S(s_t | q, e, s_<t): the solution's least likely token."""
    kl_coef: float = Field(3.0, allow_inf_nan=False)
    """Weight of the penalty mean_t KL_t, KL_t = log pi_T(e_t | q, s, e_<t) - log pi_S(e_t | q, e_<t)."""
    kl_max_coef: float = Field(0.03, allow_inf_nan=False)
    """Weight of the penalty max_t KL_t."""
    format_penalty: float = Field(-1.0, allow_inf_nan=False)
    """Added to the reward of an explanation without both think tags."""

    trained_part: ClassVar[str] = "teacher"

    def parts(self) -> dict[str, str]:
        """Part in this env → the agent that plays it."""
        return {"teacher": self.teacher, "student": self.student}

    @model_validator(mode="after")
    def _student_is_another_agent(self) -> RLTEnvConfig:
        if self.student == self.teacher:
            raise ValueError(f"env.student: must be another agent than env.teacher ('{self.teacher}'), "
                             "which learns; the student stays frozen")
        return self


class PeerReviewEnvConfig(EnvConfigBase):
    name: Literal["peer_review"] = "peer_review"
    """MAPD / FAIR (METHODS B2): the student's wrong items go to a committee of teachers; each writes
    feedback on the mistakes and a rationale of its own, the others score each rationale 1-5, and
    one feedback and one accepted rationale become a critique and a solve lesson (`envs/peer_review.py`)."""
    student: str = "student"
    """The agent that answers the training questions: the one the trainer updates."""
    teachers: tuple[str, ...] = Field(("teacher_a", "teacher_b", "teacher_c"), min_length=2, max_length=8)
    """The committee, by agent name: each writes feedback and a rationale and reviews the others'
    rationales (the paper's three: GPT-3.5-Turbo, Gemini-1.0-Pro, Mixtral-8x7B)."""
    accept_above: float = Field(3.0, ge=0.0, le=5.0)
    """A rationale is accepted when the mean of its valid peer scores (1-5) is strictly above this
    (the paper's code: > 3, i.e. about 4 points); one with no valid score is rejected."""
    critique_weight: float = Field(0.5, ge=0.0, le=1.0)
    """α: the critique lesson's weight; the solve lesson gets 1 − α (the paper's alpha = 0.5). A
    lesson of weight 0 is not made."""
    privileged: bool = True
    """Teachers write their rationale with the reference solution in context (the embedded teachers'
    only edge over the student). false: the bare question, as the paper's API teachers got it."""
    critique_hint: bool = True
    """The critique lesson's input ends with the hint line "The correct answer should be N." as in the
    paper's code (data.py); false: question and student answer only, as the paper's text says."""
    verify_rationales: bool = False
    """Also require the verifier to accept an accepted rationale's final answer. false: peer review
    alone decides, as in the paper."""
    max_reply_chars: int = Field(4000, ge=16)
    """Teacher replies are cut to this many characters before anyone reads them (counted as
    `episodes/truncated_replies`)."""

    @field_validator("teachers")
    @classmethod
    def _a_committee(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"names a teacher twice ({list(value)}): a rationale's reviewers are the other teachers")
        if info.data.get("student") in value:
            raise ValueError(f"names the student '{info.data['student']}'; the committee is the other agents")
        return value

    def parts(self) -> dict[str, str]:
        """Part in this env → the agent that plays it: the student, and teacher1..N in committee order."""
        return {"student": self.student} | {f"teacher{i}": name for i, name in enumerate(self.teachers, 1)}


class InterventionEnvConfig(EnvConfigBase):
    name: Literal["intervention"] = "intervention"
    """Teacher explanations with Theory of Mind (METHODS E1): the teacher's mental model of the student
    ranks the round's problems by the utility of an explanation, and the teacher explains only the
    top `budget` fraction before the student answers (`envs/intervention.py`)."""
    student: str = "student"
    """The agent that answers every problem (with the explanation where there is one): the one the trainer updates."""
    teacher: str = "teacher"
    """The agent that is the mental model (scores the gold answer as the student would give it) and explains."""
    budget: float = Field(0.4, ge=0.0, le=1.0)
    """b: the fraction of a round's problems the teacher may explain; floor(b * n) of them are (the
    paper's grid is 0, 0.2, ..., 1; 0.4 is ours)."""
    policy: InterventionPolicy = "utility"
    """Which problems get the budget: `utility` (the mental model's P_int - P_no, highest first: the
    paper's method), `random` (a seeded coin per problem), `least_confident` (the student's own
    probability of the gold answer, lowest first): the paper's baselines."""
    privileged: bool = True
    """The teacher explains with the reference solution in its context: the embedded teacher's only
    edge over a student of its own size. false: the problem alone, for a stronger teacher."""

    def parts(self) -> dict[str, str]:
        """Part in this env → the agent that plays it."""
        return {"student": self.student, "teacher": self.teacher}


ENV_CONFIGS = (CorrectionEnvConfig, DialogueEnvConfig, RolloutsEnvConfig, DistillEnvConfig, TailoredEnvConfig,
               FirstErrorEnvConfig, AmpoEnvConfig, RLTEnvConfig, PeerReviewEnvConfig, InterventionEnvConfig)
EnvConfig = Annotated[CorrectionEnvConfig | DialogueEnvConfig | RolloutsEnvConfig | DistillEnvConfig
                      | TailoredEnvConfig | FirstErrorEnvConfig | AmpoEnvConfig | RLTEnvConfig | PeerReviewEnvConfig
                      | InterventionEnvConfig, Field(discriminator="name")]
ENV_NAMES = tuple(c.model_fields["name"].default for c in ENV_CONFIGS)
