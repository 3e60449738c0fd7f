"""Tutoring runs and `tutorloop chat` on a tiny random tutor with a scripted student and tagger:
the run trains the tutor with the same trainer and writes what the README promises; a person
drives chat through stdin, and the session is scored and saved like a simulation."""

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tutorloop.chat import chat
from tutorloop.cli import main
from tutorloop.config import load_config

pytestmark = pytest.mark.integration

STUDENT = ["I got 12.", "Still 12, I think.", "Oh, it is 7."]


def problems_file(tmp_path):
    path = tmp_path / "problems.jsonl"
    rows = [{"id": f"p{i}", "prompt": f"Tom has 3 apples and gets 4 more ({i}). How many apples?", "answer": 7,
             "solution": "Adding 4 more: 3 + 4 = 7.\nThe answer is 7."} for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tutoring_config(tmp_path, tutor, student_replies=STUDENT, **sections):
    raw = {
        "name": "tiny-tutoring", "run_dir": str(tmp_path / "run"),
        "agents": {"tutor": {"model": str(tutor), "sampling": {"max_new_tokens": 8}},
                   "sim_student": {"generator": {"kind": "scripted", "replies": list(student_replies)}},
                   "tagger": {"generator": {"kind": "scripted", "replies": ["probing"]}}},
        "tasks": {"source": "jsonl", "path": str(problems_file(tmp_path)), "num_train": 0, "num_eval": 1},
        "env": {"name": "dialogue", "max_turns": 3, "num_candidates": 2},
        "trainer": {"lr": 1e-2, "objectives": {"sft": 1.0, "dpo": 0.5},
                    "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}},
        "loop": {"rounds": 2, "problems_per_round": 1},
        "log": {"console": False, "wandb": {"mode": "disabled"}},
    }
    for key, value in sections.items():
        raw[key] = raw.get(key, {}) | value
    path = tmp_path / "tutoring.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_tutoring_run_trains_the_tutor_and_writes_metrics_transcripts_and_viewer(tmp_path, tiny_lm_dir):
    assert main(["run", str(tutoring_config(tmp_path, tiny_lm_dir, log={"wandb": {"mode": "offline"}}))]) == 0
    run_dir = tmp_path / "run"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1]
    # The scripted student finds 7 in its second reply: s = 2, and the tiny tutor never says 7.
    for row in rows:
        assert [row[f"tutoring/success@{k}"] for k in range(1, 8)] == [0.0] + [1.0] * 6
        assert [row[f"tutoring/telling@{k}"] for k in range(1, 8)] == [0.0] * 7
        assert row["tutoring/move_probing"] == 1.0 and row["tutoring/student_replies"] == 2.0
        assert row["tutoring/reward"] == 1.0 and row["lessons/sft"] == 2
    assert [r["policy_version"] for r in rows] == [1, 2]  # SFT on the tutor's turns moved the tutor
    dialogues = [json.loads(line) for line in (run_dir / "episodes.jsonl").read_text().splitlines()]
    tutor_turns = [[t for t in d["turns"] if t["role"] == "tutor" and t["provenance"] == "model"] for d in dialogues]
    assert [{t["policy_version"] for t in turns} for turns in tutor_turns] == [{0}, {1}]  # each round: newest tutor
    assert all(t["token_ids"] and t["move"] == "probing" and len(t["alternatives"]) == 1
               for turns in tutor_turns for t in turns)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["eval_before/success@2"] == 1.0 and "eval_after/telling@7" in summary
    assert (run_dir / "tutor" / "adapter_model.safetensors").exists()
    html = (run_dir / "transcripts.html").read_text()
    assert "Round 1" in html and "probing" in html
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    assert list(offline.glob("*.wandb"))


def test_a_tutoring_run_trains_the_tutor_through_pg(tmp_path, tiny_lm_dir):
    """`pg` alone: every sampled tutor turn of the round reaches the trainer, as sampled."""
    config = tutoring_config(tmp_path, tiny_lm_dir, trainer={"objectives": {"pg": 1.0}},
                             loop={"rounds": 1, "problems_per_round": 2}, eval={"before": False, "after": False})
    assert main(["run", str(config)]) == 0
    (row,) = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    dialogues = [json.loads(line) for line in (tmp_path / "run" / "episodes.jsonl").read_text().splitlines()]
    sampled = [t for d in dialogues for t in d["turns"] if t["role"] == "tutor" and t["provenance"] == "model"]
    assert len(dialogues) == 2 and sampled and all(len(t["token_ids"]) == len(t["logprobs"]) for t in sampled)
    assert row["lessons/pg"] == len(sampled) and row["pg/tokens"] == sum(len(t["token_ids"]) for t in sampled)
    assert row["policy_version"] == 1


def test_a_tutoring_run_resumes_and_evaluates_during_training_like_any_run(tmp_path, tiny_lm_dir):
    """Dialogues run through the one loop: a checkpoint after round 0, a continuation to 3 rounds
    with `eval.every=1` (greedy tutor on the held-out students after round 1, not after the last)."""
    config = str(tutoring_config(tmp_path, tiny_lm_dir, eval={"before": False, "after": False}, loop={"rounds": 1}))
    metrics = tmp_path / "run" / "metrics.jsonl"
    assert main(["run", config]) == 0
    (first,) = metrics.read_text().splitlines()
    assert main(["run", config, "--resume", "loop.rounds=3", "eval.every=1"]) == 0
    assert metrics.read_text().splitlines()[0] == first  # round 0 was not run again
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2] and [r["policy_version"] for r in rows] == [1, 2, 3]  # continued
    assert ["eval/success@2" in r for r in rows] == [False, True, False]
    assert (tmp_path / "run" / "checkpoints").is_dir() and (tmp_path / "run" / "tutor").is_dir()


def test_chat_as_student_through_stdin(tmp_path, tiny_lm_dir):
    config = tutoring_config(tmp_path, tiny_lm_dir)
    typed = "I multiplied: 3 * 4 = 12.\n\nWait, is it 7?\n"
    done = subprocess.run([sys.executable, "-m", "tutorloop.cli", "chat", str(config), "--as", "student"],
                          input=typed, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "You are playing" in out and "Tutor [generic]: Hi " in out and "(you)> " in out
    assert "score: success@k from k=1, no telling (answer 7)" in out
    (session,) = (tmp_path / "run" / "chat").iterdir()
    (dialogue,) = [json.loads(line) for line in (session / "episodes.jsonl").read_text().splitlines()]
    student = [t for t in dialogue["turns"] if t["role"] == "sim_student"]
    assert [t["text"] for t in student] == ["I multiplied: 3 * 4 = 12.", "Wait, is it 7?"]  # the blank line is skipped
    assert {t["provenance"] for t in student} == {"human"}
    (metrics,) = [json.loads(line) for line in (session / "metrics.jsonl").read_text().splitlines()]
    assert metrics["tutoring/success@1"] == 1.0 and metrics["tutoring/telling@7"] == 0.0
    assert (session / "transcripts.html").exists()


def test_chat_as_tutor_scores_the_persons_telling(tmp_path, tiny_lm_dir):
    cfg = load_config(tutoring_config(tmp_path, tiny_lm_dir, student_replies=["I got 12.", "Ok, 7."]))
    out = io.StringIO()
    session = asyncio.run(chat(cfg, side="tutor", stdin=io.StringIO("The answer is 7.\n"), stdout=out))
    (dialogue,) = [json.loads(line) for line in (session / "episodes.jsonl").read_text().splitlines()]
    tutor = [t for t in dialogue["turns"] if t["role"] == "tutor"]
    assert [(t["provenance"], t["move"]) for t in tutor] == [("env", "generic"), ("human", "telling")]
    assert tutor[1]["prompt"][0]["role"] == "system"  # a person's turn keeps the prompt a model tutor would see
    assert "score: success@k from k=1, telling@k from k=1" in out.getvalue()


def test_chat_needs_a_tutoring_config(tmp_path, capsys, tiny_lm_dir):
    path = tmp_path / "c.yaml"
    path.write_text(f"agents: {{student: {{model: {tiny_lm_dir}}}, teacher: {{}}, mentor: {{}}}}\n")
    assert main(["chat", str(path), "--as", "student"]) == 2
    assert "chat needs a tutoring config" in capsys.readouterr().err


@pytest.mark.slow
def test_embedded_smollm2_tutoring_run(tmp_path):
    """configs/tutoring_default.yaml, cut to one short round: SmolLM2 tutor, student and tagger."""
    config = str(Path(__file__).resolve().parents[2] / "configs" / "tutoring_default.yaml")
    assert main(["run", config, f"run_dir={tmp_path / 'run'}", "loop.rounds=1", "loop.problems_per_round=2",
                 "tasks.num_eval=1", "eval.before=false", "env.max_turns=3", "log.wandb.mode=disabled"]) == 0
    (row,) = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    success = [row[f"tutoring/success@{k}"] for k in range(1, 8)]
    telling = [row[f"tutoring/telling@{k}"] for k in range(1, 8)]
    assert success == sorted(success) and telling == sorted(telling)  # both only grow with k
    assert all(0.0 <= v <= 1.0 for v in success + telling)
    assert sum(row[f"tutoring/move_{m}"] for m in ("focus", "probing", "telling", "generic")) == pytest.approx(1.0)
    assert "eval_after/success@7" in json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (tmp_path / "run" / "transcripts.html").exists() and (tmp_path / "run" / "tutor").is_dir()
