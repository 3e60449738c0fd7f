"""Env configs: `env:` is one episode program's knobs, chosen by `name` (a tagged union), and the
names of the agents that play its parts.

Part of the run config (`tutorloop.config` re-exports every name here). A new env adds its config
class here (to `ENV_CONFIGS` and `EnvConfig`) and its env class to `tutorloop.envs.ENVS`.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

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
               FirstErrorEnvConfig, InterventionEnvConfig)
EnvConfig = Annotated[CorrectionEnvConfig | DialogueEnvConfig | RolloutsEnvConfig | DistillEnvConfig
                      | TailoredEnvConfig | FirstErrorEnvConfig | InterventionEnvConfig, Field(discriminator="name")]
ENV_NAMES = tuple(c.model_fields["name"].default for c in ENV_CONFIGS)
