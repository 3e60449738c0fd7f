"""The dialogue env with scripted agents: turn order, tagging, early stop, quitting, what a transcript
keeps, and the tutor's lessons (SFT on success without telling, DPO success > telling)."""

import asyncio

from tutorloop.envs import prompts
from tutorloop.agents import Agent
from tutorloop.envs.dialogue import DialogueEnv
from tutorloop.envs.moves import parse_move
from tutorloop.envs.to_examples import to_tutor_lessons
from tutorloop.generators.scripted import ScriptedGenerator
from tutorloop.trainers.encoding import TokenEncoder
from tutorloop.types import Completion, Problem, SamplingParams, StopReason

PROBLEM = Problem("p1", "Ana has 3 bags of 4 plums. How many plums?", answer="12",
                  solution="3 * 4 = 12.\nThe answer is 12.", incorrect_solution="3 + 4 = 7.\nThe answer is 7.",
                  persona="Rina is a 7th grade student who adds too quickly.")
PARAMS = SamplingParams(temperature=0.0, max_new_tokens=16)


def agents(tutor_replies, student_replies, tags=("probing",)):
    return {name: Agent(name, ScriptedGenerator(replies), PARAMS)
            for name, replies in (("tutor", tutor_replies), ("sim_student", student_replies), ("tagger", tags))}


def run(env, agents_):
    return asyncio.run(env.run(PROBLEM, agents_))


def test_opening_explanation_then_alternating_turns_until_the_answer():
    episode = run(DialogueEnv(max_turns=7, telling_penalty=0.5),
                  agents(["Tutor: How many plums are in one bag?\nStudent: 4", "What is 3 bags of 4?"],
                         ["Rina: I added 3 + 4 = 7.", "There are 4 in a bag.", "Oh! 3 x 4 = 12 plums."]))
    roles = [t.role for t in episode.turns]
    assert roles == ["tutor", "sim_student", "tutor", "sim_student", "tutor", "sim_student"]
    opening = episode.turns[0]
    assert opening.text == "Hi Rina, could you walk me through your solution?" and opening.provenance == "env"
    assert episode.turns[1].text == "I added 3 + 4 = 7."  # the speaker label is dropped
    assert episode.turns[2].text == "How many plums are in one bag?"  # the student's line it wrote is cut
    assert [t.move for t in episode.turns if t.role == "tutor"] == ["generic", "probing", "probing"]
    assert [t.correct for t in episode.turns if t.role == "sim_student"] == [False, False, True]
    assert episode.stop == StopReason.SOLVED
    assert episode.rewards == {"success": 1.0, "telling": 0.0, "reward": 1.0, "student_replies": 2.0}
    # What the tutor saw: the solution in the system prompt, its own turns as the assistant's.
    prompt = episode.turns[4].prompt
    assert "3 * 4 = 12" in prompt[0]["content"] and [m["role"] for m in prompt[1:]] == ["assistant", "user"] * 2


def test_runs_out_of_turns_and_the_tagger_marks_telling():
    episode = run(DialogueEnv(max_turns=3, telling_penalty=0.5),
                  agents(["Look again.", "It is 12, not 7."], ["I still get 7."], tags=("focus", "generic")))
    assert sum(t.role == "sim_student" for t in episode.turns) == 4  # explanation + 3 replies
    assert [t.move for t in episode.turns if t.role == "tutor"] == ["generic", "focus", "telling", "focus"]
    assert episode.stop == StopReason.MAX_ROUNDS
    assert episode.rewards == {"success": 0.0, "telling": 1.0, "reward": -0.5, "student_replies": 3.0}


def test_a_quit_turn_ends_the_dialogue_and_is_not_kept():
    class Quitter:
        name, provenance, sampling = "sim_student", "human", PARAMS

        def __init__(self):
            self.calls = 0

        async def sample(self, messages, n=1, sampling=None):
            self.calls += 1
            return [Completion("7", (), (), finish_reason="quit" if self.calls == 2 else "stop")]

    episode = run(DialogueEnv(max_turns=7, telling_penalty=0.5), agents(["Why?"], []) | {"sim_student": Quitter()})
    assert [t.role for t in episode.turns] == ["tutor", "sim_student", "tutor"]


def test_transcript_keeps_tokens_policy_version_and_alternatives():
    tutor_generator = ScriptedGenerator(["Why 3 + 4?", "The answer is 12."])
    tutor_generator.version = 5
    episode = run(DialogueEnv(max_turns=1, telling_penalty=0.5, num_candidates=2),
                  {**agents([], ["7", "Oh, 12."]), "tutor": Agent("tutor", tutor_generator, PARAMS)})
    tutor = episode.turns[2]
    assert tutor.text == "Why 3 + 4?" and tutor.alternatives == ("The answer is 12.",)
    assert tutor.policy_version == 5 and tutor.kind == "utterance"


def test_lessons_sft_on_success_without_telling_and_dpo_success_over_telling(tiny_tokenizer):
    good = run(DialogueEnv(max_turns=3, telling_penalty=0.5, num_candidates=2),
               agents(["Why 3 + 4?", "It is 12.", "Count one bag.", "Sure, 12 is right: 3 * 4."],
                      ["7", "Because.", "Oh, 12."]))
    told = run(DialogueEnv(max_turns=3, telling_penalty=0.5, num_candidates=2),
               agents(["It is 12.", "Why?"], ["7", "Ok, 12."]))
    encode = TokenEncoder(tiny_tokenizer)
    lessons = to_tutor_lessons([good, told], encode, objectives={"sft", "dpo"})
    batch = {name: [x for x in lessons if x.objective == name] for name in ("sft", "dpo")}

    def text(ids):
        return tiny_tokenizer.decode(ids, skip_special_tokens=True)

    # good: tutor turns "Why 3 + 4?" and "Count one bag." (the opening is the env's): 2 SFT targets;
    # each spoken turn > its alternative that states 12: 2 pairs. told: the tutor said 12 first -> nothing.
    assert [text(e.target_ids) for e in batch["sft"]] == ["Why 3 + 4?", "Count one bag."]
    assert [(text(p.target_ids), text(p.rejected_ids)) for p in batch["dpo"]] == [
        ("Why 3 + 4?", "It is 12."), ("Count one bag.", "Sure, 12 is right: 3 * 4.")]
    assert all(p.rejected_ids[-1] != tiny_tokenizer.eos_token_id for p in batch["dpo"])
    assert batch["sft"][0].prompt_ids == encode.prompt(good.turns[2].prompt)
    assert batch["dpo"][1].prompt_ids == encode.prompt(good.turns[4].prompt)
    assert [x.objective for x in to_tutor_lessons([good], encode, objectives={"sft"})] == ["sft", "sft"]


def test_parse_move_and_one_utterance():
    assert parse_move("Probing.") == "probing" and parse_move("Move: TELLING") == "telling"
    assert parse_move("I think it's a question") == "generic" and parse_move("generically") == "generic"
    assert prompts.one_utterance("**Tutor:** Why?\n**Student:** 7", "Rina") == "Why?"
    assert prompts.one_utterance("Sure: it is 7.", "Rina") == "Sure: it is 7."
    assert prompts.student_name(Problem("x", "?", persona="Rina is a student.")) == "Rina"
    assert prompts.student_name(Problem("x", "?", persona="a student")) == prompts.DEFAULT_NAME
