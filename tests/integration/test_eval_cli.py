"""`tutorloop eval` end to end on a tiny random-init student, for every data format: the results JSON
(pass@1, pass@k, per-problem records), the W&B offline run, and one-line errors for bad files."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from tutorloop.cli import main
from tutorloop.tasks.sources import load_gsm8k

pytestmark = pytest.mark.integration


def _config(tmp_path: Path, student: Path, teacher: Path) -> str:
    path = tmp_path / "eval.yaml"
    path.write_text(f"""
run_dir: {tmp_path / 'run'}
agents:
  student: {{model: {student}}}
  teacher: {{model: {teacher}}}
  mentor: {{model: {teacher}}}
eval: {{max_new_tokens: 6}}
log: {{console: false, wandb: {{mode: disabled}}}}
""")
    return str(path)


def _svamp(tmp_path: Path) -> tuple[str, list[str]]:
    rows = [{"ID": f"chal-{i}", "Body": f"Sam has {i} apples.", "Question": "How many with 2 more?",
             "Answer": float(i + 2)} for i in range(1, 6)]
    path = tmp_path / "svamp.json"
    path.write_text(json.dumps(rows))
    return str(path), [r["ID"] for r in rows]


def _math500(tmp_path: Path) -> tuple[str, list[str]]:
    rows = [{"problem": f"What is $\\frac{{{i}}}{{2}}$ as a decimal?", "answer": f"\\frac{{{i}}}{{2}}",
             "unique_id": f"test/algebra/{i}.json"} for i in range(1, 6)]
    path = tmp_path / "math500.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path), [r["unique_id"] for r in rows]


def _hf(tmp_path: Path) -> tuple[str, list[str]]:
    datasets = pytest.importorskip("datasets")
    test = datasets.Dataset.from_dict({"q": [f"What is {i} + 1?" for i in range(5)],
                                       "a": [f"{i} + 1 = {i + 1}\n#### {i + 1}" for i in range(5)]})
    datasets.DatasetDict({"test": test}).save_to_disk(str(tmp_path / "hf_ds"))
    return str(tmp_path / "hf_ds"), [f"hf_ds-test-{i}" for i in range(5)]


def _gsm8k(tmp_path: Path) -> tuple[str, list[str]]:
    path = tmp_path / "gsm8k.jsonl"
    rows = [{"question": f"Tom has {i} cars and buys 3. How many?", "answer": f"{i} + 3 = {i + 3}\n#### {i + 3}"}
            for i in range(5)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path), [f"gsm8k-{i}" for i in range(1, 6)]


FORMATS = {"svamp": (_svamp, []), "math500": (_math500, []),
           "hf": (_hf, ["tasks.split=test", "tasks.question_field=q", "tasks.answer_field=a"]),
           "gsm8k": (_gsm8k, [])}


def _results(path: Path) -> dict:
    results = json.loads(path.read_text())
    records = results["records"]
    assert results["num_problems"] == len(records)
    assert results["pass@1"] == pytest.approx(sum(r["correct"] for r in records) / len(records))
    assert all(set(r) == {"id", "correct", "answer", "reply", "sampled_correct"} for r in records)
    datetime.fromisoformat(results["date"])
    return results


@pytest.mark.parametrize("source", list(FORMATS))
def test_eval_each_format_first_problems_with_pass_at_k(tmp_path, tiny_lm_dir, tiny_teacher_dir, source):
    write, extra = FORMATS[source]
    data, ids = write(tmp_path)
    out = tmp_path / "results.json"
    argv = ["eval", _config(tmp_path, tiny_lm_dir, tiny_teacher_dir), "--out", str(out), f"tasks.source={source}",
            f"tasks.path={data}", "eval.problems=first", "tasks.num_eval=3", "eval.k=2", "eval.samples=3", *extra]
    assert main(argv) == 0
    results = _results(out)
    assert (results["source"], results["path"], results["model"]) == (source, data, str(tiny_lm_dir))
    assert (results["k"], results["samples"], results["temperature"]) == (2, 3, 0.8)
    assert [r["id"] for r in results["records"]] == ids[:3]  # the first three, in file order
    assert 0.0 <= results["pass@k"] <= 1.0 and all(0 <= r["sampled_correct"] <= 3 for r in results["records"])
    assert results["split"] == ("test" if source == "hf" else None)
    assert not (tmp_path / "run" / "eval_results.json").exists()  # --out replaces the default place


def test_eval_held_out_split_into_run_dir_with_wandb(tmp_path, tiny_lm_dir, tiny_teacher_dir, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    data, ids = _svamp(tmp_path)
    config = _config(tmp_path, tiny_lm_dir, tiny_teacher_dir)
    assert main(["eval", config, "tasks.source=svamp", f"tasks.path={data}", "tasks.num_eval=2",
                 "log.wandb.mode=offline"]) == 0
    results = _results(tmp_path / "run" / "eval_results.json")
    assert results["num_problems"] == 2 and results["problems"] == "held_out"
    assert set(r["id"] for r in results["records"]) <= set(ids)
    assert results["pass@k"] is None and results["k"] == 0  # eval.k=0: greedy pass@1 only
    out = capsys.readouterr().out
    assert "eval accuracy:" in out and "svamp held-out split" in out
    assert len(list((tmp_path / "run" / "wandb").glob("offline-run-*"))) == 1


def test_eval_arithmetic_first(tmp_path, tiny_lm_dir, tiny_teacher_dir):
    out = tmp_path / "arith.json"
    assert main(["eval", _config(tmp_path, tiny_lm_dir, tiny_teacher_dir), "--out", str(out),
                 "eval.problems=first", "tasks.num_eval=2"]) == 0
    assert [r["id"] for r in _results(out)["records"]] == ["arith-d1-000000", "arith-d1-000001"]


def test_eval_on_shared_gsm8k_first_rows(tmp_path, tiny_lm_dir, tiny_teacher_dir, gsm8k_train):
    out = tmp_path / "gsm8k.json"
    assert main(["eval", _config(tmp_path, tiny_lm_dir, tiny_teacher_dir), "--out", str(out), "tasks.source=gsm8k",
                 f"tasks.path={gsm8k_train}", "eval.problems=first", "tasks.num_eval=3"]) == 0
    results = _results(out)
    assert [r["id"] for r in results["records"]] == [p.id for p in load_gsm8k(gsm8k_train)[:3]]


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tutorloop: error:") and "\n" not in err
    return err


def test_eval_bad_files_are_one_line(tmp_path, tiny_lm_dir, tiny_teacher_dir, capsys):
    config = _config(tmp_path, tiny_lm_dir, tiny_teacher_dir)
    svamp = tmp_path / "svamp.json"
    svamp.write_text(json.dumps([{"Body": "b", "Question": "q", "Answer": 1.0}] * 2 + [{"Body": "b", "Question": "q"}]))
    err = _one_line_error(capsys, ["eval", config, "tasks.source=svamp", f"tasks.path={svamp}", "eval.problems=first"])
    assert str(svamp) in err and "row 3: missing field 'Answer'" in err
    math = tmp_path / "math.jsonl"
    math.write_text('{"problem": "p", "answer": "1"}\n{"problem": "q"}\n')
    err = _one_line_error(capsys, ["eval", config, "tasks.source=math500", f"tasks.path={math}", "eval.problems=first"])
    assert str(math) in err and "line 2: missing field 'answer'" in err
    err = _one_line_error(capsys, ["eval", config, "tasks.source=hf", "tasks.path=someone/not-cached",
                                   "eval.problems=first"])
    assert "someone/not-cached" in err and "does not download" in err
    err = _one_line_error(capsys, ["eval", config, "eval.k=4", "eval.samples=2"])
    assert "eval" in err and "samples (2) must be >= k (4)" in err
