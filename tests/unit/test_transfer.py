"""eval.transfer (issue 16): a second held-out set the run never trains on, scored under the run's
own prompt and under a plain step-by-step chat prompt; built-in word problems when the file is absent."""

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tutorloop.config import load_config, validate_config
from tutorloop.envs.evaluation import SolvesBareProblems, transfer_report
from tutorloop.envs.prompts import STUDENT_SYSTEM
from tutorloop.errors import UserError
from tutorloop.graders import verify, verify_last_number
from tutorloop.tasks import build_tasks
from tutorloop.tasks.transfer import build_transfer
from tutorloop.tasks.word_problems import make_word_problems
from tutorloop.types import Completion, Problem

ROOT = Path(__file__).resolve().parents[2]
BASE = {"agents": {"student": {}, "teacher": {}, "mentor": {}}}


def _error(eval_section, env=None):
    raw = BASE | {"eval": eval_section} | ({"env": env} if env else {})
    with pytest.raises(UserError) as info:
        validate_config(raw)
    assert "\n" not in str(info.value)
    return str(info.value)


def _gsm8k_file(tmp_path, n, stem="g"):
    path = tmp_path / f"{stem}.jsonl"
    rows = [{"question": f"Q{i}: what is {i} plus 1,000?", "answer": f"{i} + 1000 = {i + 1000}\n#### {i + 1000:,}"}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_transfer_config_defaults_and_one_line_errors():
    """Catches: a transfer section that validates without the file it needs, a builtin one that takes
    a path it would ignore, a num of 0, or a transfer set on an env with no student to score."""
    cfg = validate_config(BASE | {"eval": {"transfer": {"path": "x.jsonl"}}})
    assert (cfg.eval.transfer.source, cfg.eval.transfer.num, cfg.eval.transfer.max_new_tokens) == ("gsm8k", 64, 256)
    assert validate_config(BASE).eval.transfer is None  # off unless asked for
    assert "eval.transfer: path: source 'gsm8k' needs `path`" in _error({"transfer": {"source": "gsm8k"}})
    assert "eval.transfer: path: the builtin source" in _error({"transfer": {"source": "builtin", "path": "x"}})
    assert "eval.transfer.num" in _error({"transfer": {"source": "builtin", "num": 0}})
    assert "eval.transfer.source" in _error({"transfer": {"source": "math500", "path": "x"}})
    dialogue = {"agents": {"tutor": {}, "sim_student": {}, "tagger": {}}, "env": {"name": "dialogue"},
                "eval": {"transfer": {"source": "builtin"}}}
    with pytest.raises(UserError, match="eval.transfer: env 'dialogue' has no student"):
        validate_config(dialogue)


def test_default_config_scores_gsm8k_transfer_from_shared_data():
    """Catches: the embedded default losing its transfer set, or pointing it anywhere but the shared
    GSM8K file (relative to the repo root, where `make run` runs)."""
    transfer = load_config(ROOT / "configs" / "default.yaml").eval.transfer
    assert (transfer.source, transfer.path) == ("gsm8k", "../shared/data/gsm8k/train.jsonl")


def test_split_leaves_out_every_problem_the_run_trains_or_evaluates_on(tmp_path):
    """Catches: a transfer set that overlaps the training or held-out problems when the run trains
    on the same file (same ids), or on a copy of it under other ids (same text)."""
    path = _gsm8k_file(tmp_path, 40)
    pool = build_tasks("gsm8k", path=str(path), difficulty=1, num_train=12, num_eval=4, seed=3)
    seen = pool.train + pool.eval
    transfer = build_transfer("gsm8k", path=str(path), num=24, seen=seen)
    assert len(transfer.problems) == 24 and transfer.source == f"gsm8k:{path}"
    assert not {p.id for p in transfer.problems} & {p.id for p in seen}
    copy = [Problem(id=f"other-{i}", prompt=p.prompt, answer=p.answer) for i, p in enumerate(seen)]
    renamed = build_transfer("gsm8k", path=str(path), num=24, seen=copy)
    assert not {p.prompt for p in renamed.problems} & {p.prompt for p in seen}
    assert "16 left out" in transfer.note
    with pytest.raises(UserError, match=r"eval.transfer.num=25: .* has only 24 problems"):
        build_transfer("gsm8k", path=str(path), num=25, seen=seen)


def test_gsm8k_answers_lose_their_thousands_commas(tmp_path):
    """Catches: a '#### 1,003' final kept with its comma, which no reply's number would equal."""
    transfer = build_transfer("gsm8k", path=str(_gsm8k_file(tmp_path, 5)), num=5, seen=())
    assert transfer.problems[3].answer == "1003"


def test_an_absent_file_falls_back_to_builtin_word_problems(tmp_path):
    """Catches: a fresh clone (no ../shared) failing the run, or falling back without saying so or
    without the summary being able to tell which set was scored."""
    missing = tmp_path / "nope" / "train.jsonl"
    transfer = build_transfer("gsm8k", path=str(missing), num=10, seen=())
    assert transfer.source == "builtin" and len(transfer.problems) == 10
    assert str(missing) in transfer.note and "built-in" in transfer.note and "\n" not in transfer.note
    assert all(p.source == "builtin" for p in transfer.problems)


def test_builtin_word_problems_are_seeded_multi_step_and_self_consistent():
    """Catches: a generator whose reference solutions do not reach its answers, that changes from
    call to call, or that makes one-step problems (it stands in for GSM8K)."""
    problems = make_word_problems(70)
    assert problems == make_word_problems(70) and len({p.prompt for p in problems}) == 70
    assert all(verify(p, p.solution).correct and int(p.answer) > 0 and p.difficulty >= 3 for p in problems)
    assert len({p.prompt.split()[1] for p in problems}) > 5  # several templates, not one


def test_the_chat_grader_takes_the_last_number_of_the_reply():
    """Catches: grading a free-form chat reply on an earlier 'answer is' phrase or first number
    rather than where the reasoning ends, or missing a number with thousands commas."""
    problem = Problem(id="p", prompt="?", answer="1450")
    assert verify_last_number(problem, "The answer is 12. Wait: 1000 + 450 = 1,450").correct
    assert not verify_last_number(problem, "1000 + 450 = 1450, so the answer is 1451.").correct
    assert verify_last_number(problem, "So they have $1,450.").answer == "1450"
    assert not verify_last_number(problem, "I cannot tell.").correct


class _Recorder:
    """A student generator that records every request and replies with one fixed text."""

    def __init__(self, reply):
        self.reply, self.requests = reply, []

    async def generate(self, prompts, params):
        self.requests.append((list(prompts), params))
        return [Completion(self.reply, (1,), (-0.1,)) for _ in prompts]


class _Env(SolvesBareProblems):
    parts = {"student": "s"}


def test_transfer_uses_the_runs_prompt_and_a_step_by_step_chat_prompt():
    """Catches: the chat prompt keeping the training system message or not asking for step-by-step
    reasoning, the run's prompt not being the env's own eval prompt, the chat replies cut at the
    training format's stop pattern, or metrics under names other than eval/transfer_*_<label>."""
    student = _Recorder("Step 1: 2 + 3 = 5. The answer is 5.\nCheck: 5 - 3 = 2")
    problems = [Problem(id="a", prompt="Two and three?", answer="5"), Problem(id="b", prompt="One and one?", answer="2"),
                Problem(id="c", prompt="Four less two?", answer="2")]
    metrics, line = asyncio.run(transfer_report(_Env(), {"s": SimpleNamespace(generator=student)}, problems, "after",
                                                source="builtin", max_new_tokens=99))
    (train_prompts, train_params), (chat_prompts, chat_params) = student.requests
    assert train_prompts[0][0] == {"role": "system", "content": STUDENT_SYSTEM}  # the run's own eval prompt
    assert len(chat_prompts[0]) == 1 and chat_prompts[0][0]["role"] == "user"
    assert chat_prompts[0][0]["content"].startswith("Two and three?") and "step by step" in chat_prompts[0][0]["content"]
    assert chat_params.stop_regex is None and chat_params.temperature == 0.0 and chat_params.max_new_tokens == 99
    assert train_params.max_new_tokens == 99
    # The run's prompt is graded as the run grades it ("The answer is 5": right on a only), the chat
    # prompt on the reply's last number (2: right on b and c).
    assert metrics == {"eval/transfer_accuracy_after": 1 / 3, "eval/transfer_chat_accuracy_after": 2 / 3}
    assert "0.333 under the run's prompt, 0.667 under a step-by-step chat prompt (3 problems, builtin" in line


def test_shared_gsm8k_train_file_gives_the_default_transfer_set(gsm8k_train):
    """Catches: the default's transfer file not loading as GSM8K, its comma finals kept as text, or a
    run on the same file scoring problems it trains on. Skips without ../shared/data."""
    pool = build_tasks("gsm8k", path=str(gsm8k_train), difficulty=1, num_train=256, num_eval=64, seed=0)
    transfer = build_transfer("gsm8k", path=str(gsm8k_train), num=64, seen=pool.train + pool.eval)
    assert len(transfer.problems) == 64 and not {p.id for p in transfer.problems} & {p.id for p in pool.train}
    assert all("," not in p.answer and p.answer.lstrip("-").replace(".", "").isdigit() for p in transfer.problems)
