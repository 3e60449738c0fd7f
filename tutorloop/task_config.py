"""What a run trains and is scored on: `tasks` (the problems, and any mixed in from another source)
and `eval.transfer` (a second held-out set the run never trains on). Validated where built."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tutorloop.agent_config import Strict


class SideSource(Strict):
    """A second source of problems beside the run's tasks (`tasks.mix`, `eval.transfer`): a file,
    or the built-in word problems that also stand in when the file is absent (a fresh clone has no
    ../shared), with a note saying so."""
    source: Literal["gsm8k", "jsonl", "svamp", "builtin"] = "gsm8k"
    """A file source (GSM8K-format JSONL, plain JSONL, SVAMP) or `builtin`: generated multi-step word
    problems in GSM8K's style (money, rates, fractions), unlike the arithmetic task's stories."""
    path: str | None = None
    """The file of a file source, relative to the working directory like tasks.path."""
    num: int = Field(64, ge=1)
    """How many problems: mixed into training (`tasks.mix`), kept as texts to hold the student on
    (`tasks.retain`), or scored at each evaluation (`eval.transfer`)."""

    @model_validator(mode="after")
    def _path_fits_source(self) -> SideSource:
        if self.source != "builtin" and not self.path:
            raise ValueError(f"path: source '{self.source}' needs `path`")
        if self.source == "builtin" and self.path:
            raise ValueError("path: the builtin source generates its problems and reads no file")
        return self


class MixConfig(SideSource):
    """Training problems of another source added to the pool (never to the held-out split), e.g.
    GSM8K-format problems beside the built-in arithmetic, so the student also trains on multi-step
    reasoning in another style than the task's own. `num`: problems mixed in, the file's last `num`,
    so that a transfer set drawn from the same file (its first problems the run never sees) stays
    the same whatever the mix."""


class RetainConfig(SideSource):
    """Texts of another kind than the task's on which the student is held at the reference model's
    next-token distributions (objective `kl_ref`, Learning without Forgetting): each problem's
    reference solution after the problem, under the run's prompt and under the plain chat prompt,
    or (`answered_by`) a frozen agent's own greedy reply to it there. Nothing of them is learned;
    `num`: the problems kept, the file's last `num` (as `tasks.mix`), so a transfer set from the
    file's first problems never meets them."""
    per_round: int = Field(8, ge=1)
    """Problems whose texts join each round's lessons (two lessons each, one per prompt), in turn
    through the `num` kept."""
    answered_by: str | None = None
    """An agent no learner trains whose greedy replies, under each prompt, are the texts in place of
    the reference solutions. With the student's own model (the embedded default's teacher), they are
    the untrained model's replies in its own style, the states its greedy decoding visits: Learning
    without Forgetting proper (the old model's outputs on new inputs). Greedy, so a resumed run
    makes the same texts; the cost is one generation of `per_round` problems under both prompts."""
    max_new_tokens: int = Field(256, ge=1)
    """The longest `answered_by` reply; one cut off there keeps its tokens and gets no end token."""
    replies_under: tuple[Literal["student", "chat"], ...] = ("student", "chat")
    """The prompts under which `answered_by`'s replies are the texts; under the others the
    reference solution stays. The embedded default takes replies under the chat prompt only."""

    @model_validator(mode="after")
    def _replies_need_an_answerer(self) -> RetainConfig:
        if not self.replies_under or len(set(self.replies_under)) != len(self.replies_under):
            raise ValueError(f"replies_under: one or both of student, chat, each once; got {list(self.replies_under)}")
        return self


class TasksConfig(Strict):
    source: Literal["arithmetic", "gsm8k", "jsonl", "mathdial", "svamp", "math500", "hf"] = "arithmetic"
    """Built-in arithmetic word problems, GSM8K-format JSONL, plain {id, prompt, answer, solution} JSONL,
    MathDial JSONL (its question and ground truth; tutoring runs also take its students and dialogues),
    SVAMP (one JSON array of {Body, Question, Answer}), MATH-500 JSONL ({problem, answer}: LaTeX
    answers, graded on the reply's last \\boxed{} by math-verify) or a Hugging Face dataset (`hf`)."""
    path: str | None = None
    """The data file of a file source; for `hf`, a directory written by `save_to_disk` or a hub
    dataset id already in the local Hugging Face cache (nothing is downloaded)."""
    split: str = "train"
    """hf only: the split to read (a directory saved from a single split is that split)."""
    question_field: str = "question"
    """hf only: the column that holds the problem text."""
    answer_field: str = "answer"
    """hf only: the column that holds the answer: a number, or GSM8K-style text ending in `#### n`."""
    difficulty: int = Field(1, ge=1, le=3)
    """Arithmetic only: steps per problem."""
    max_prompt_chars: int = Field(4000, ge=1)
    """Longest problem text a data file may hold; a longer one is an error naming its line, since it
    would not fit the models' context."""
    num_train: int = Field(256, ge=0)
    """Training problems (0 = all that remain after the eval split)."""
    num_eval: int = Field(64, ge=1)
    """Held-out problems, disjoint from training by id."""
    mix: MixConfig | None = None
    """Training problems of a second source, added to `num_train` of this one."""
    retain: RetainConfig | None = None
    """Texts the student is held at the reference on (objective `kl_ref`, which needs them)."""

    @model_validator(mode="after")
    def _files_need_a_path(self) -> TasksConfig:
        if self.source != "arithmetic" and not self.path:
            raise ValueError(f"source '{self.source}' needs `path`")
        return self


class TransferConfig(SideSource):
    """A second held-out set the run never trains on, scored before and after training under two
    prompts: the run's own eval prompt and a plain chat prompt that asks for step-by-step reasoning
    (forgetting shows in the second). Problems the run trains or evaluates on (same id or same text)
    are left out; the first `num` that remain, in the file's order, are the set (`num`: transfer
    problems scored at each evaluation)."""
    max_new_tokens: int = Field(256, ge=1)
    """Reply length on the transfer set under both prompts: reasoning through a multi-step problem
    takes more tokens than the built-in task's answers."""
