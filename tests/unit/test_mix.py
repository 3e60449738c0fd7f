"""tasks.mix (issue 16): training problems of a second source beside the run's own, never held out,
taken from the file's end so a transfer set from the same file (its first unseen problems) stays the
same with and without the mix; built-in word problems when the file is absent."""


import pytest
from conftest import write_gsm8k_rows

from tutorloop.config import validate_config
from tutorloop.errors import UserError
from tutorloop.loop import build_pool
from tutorloop.tasks.mix import build_mix, with_mix
from tutorloop.tasks.transfer import build_transfer

BASE = {"agents": {"student": {}, "teacher": {}, "mentor": {}}, "tasks": {"num_train": 20, "num_eval": 6}}


def _gsm8k_file(tmp_path, n):
    return write_gsm8k_rows(tmp_path, n)


def test_the_mix_trains_on_the_files_last_problems_and_leaves_held_out_and_transfer_alone(tmp_path):
    """Catches: mixed-in problems that reach the held-out split, come from the file's start (and so
    move the transfer set), or replace the task's own problems instead of joining them."""
    path = _gsm8k_file(tmp_path, 50)
    cfg = validate_config(BASE | {"tasks": BASE["tasks"] | {"mix": {"source": "gsm8k", "path": str(path), "num": 8}}})
    mix = build_mix(cfg.tasks.mix.source, path=cfg.tasks.mix.path, num=cfg.tasks.mix.num)
    assert [p.id for p in mix.problems] == [f"gsm8k-{i}" for i in range(43, 51)]  # ids are line numbers
    assert "the last 8 problems of gsm8k:" in mix.note
    pool = build_pool(cfg)
    mixed = with_mix(pool, mix)
    assert mixed.train == pool.train + mix.problems and mixed.eval == pool.eval
    assert sum(p.source == "gsm8k" for p in mixed.sample(len(mixed.train), 0)) == 8  # one epoch: each once
    alone = build_transfer("gsm8k", path=str(path), num=24, seen=pool.train + pool.eval)
    beside = build_transfer("gsm8k", path=str(path), num=24, seen=mixed.train + mixed.eval)
    assert alone.problems == beside.problems


def test_a_missing_file_falls_back_to_built_in_word_problems_with_a_note(tmp_path):
    """Catches: a fresh clone (no ../shared) failing the default run, or the stand-in reusing the
    transfer stand-in's ids (the transfer set would then leave those out)."""
    mix = build_mix("gsm8k", path=str(tmp_path / "absent.jsonl"), num=5)
    assert len(mix.problems) == 5 and all(p.id.startswith("mix-word-") and p.solution for p in mix.problems)
    assert "absent.jsonl not found" in mix.note


def test_bad_mix_settings_are_one_line_errors(tmp_path):
    path = _gsm8k_file(tmp_path, 5)
    with pytest.raises(UserError, match=r"tasks.mix.num=6: .*g.jsonl has only 5 problems"):
        build_mix("gsm8k", path=str(path), num=6)
    for mix, field in (({"source": "gsm8k"}, "tasks.mix: path"), ({"source": "builtin", "num": 0}, "tasks.mix.num"),
                       ({"source": "math500", "path": "x"}, "tasks.mix.source")):
        with pytest.raises(UserError) as info:
            validate_config(BASE | {"tasks": BASE["tasks"] | {"mix": mix}})
        assert field in str(info.value) and "\n" not in str(info.value)
