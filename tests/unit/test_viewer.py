"""The HTML transcript viewer: self-contained, role colours, move tags, text escaped."""

import json

from tutorloop.metrics import episode_record
from tutorloop.types import Episode, Problem, Turn
from tutorloop.viewer import MOVE_COLOURS, ROLE_COLOURS, VIEWER_FILE, write_viewer


def dialogue_episode():
    problem = Problem("p1", "3 bags of 4 plums?", answer="12", persona="Rina is a student.",
                      incorrect_solution="3 + 4 = 7")
    turns = (Turn(role="tutor", text="Hi Rina, walk me through it?", prompt=(), move="generic", provenance="env"),
             Turn(role="sim_student", text="I added: <b>7</b>", prompt=(), correct=False, token_ids=(1, 2, 3)),
             Turn(role="tutor", text="Why add?", prompt=(), move="probing", policy_version=2,
                  alternatives=("It is 12.",)),
             Turn(role="sim_student", text="Oh, 12.", prompt=(), correct=True))
    return Episode(problem=problem, turns=turns, rewards={"success": 1.0, "telling": 0.0, "student_replies": 1.0})


def test_viewer_renders_roles_moves_and_escapes(tmp_path):
    (tmp_path / "episodes.jsonl").write_text(json.dumps(episode_record(3, dialogue_episode())) + "\n")
    html = write_viewer(tmp_path, title="run <x>").read_text()
    assert (tmp_path / VIEWER_FILE).exists()
    assert "<script" not in html and "http" not in html  # nothing to run, nothing fetched
    assert "run &lt;x&gt;" in html and "I added: &lt;b&gt;7&lt;/b&gt;" in html
    assert ROLE_COLOURS["tutor"] in html and ROLE_COLOURS["sim_student"] in html
    assert f'background:{MOVE_COLOURS["probing"]}">probing</span>' in html
    assert "Round 3" in html and "success: yes" in html and "told: no" in html
    assert "policy v2" in html and "3 tokens" in html and "also sampled: It is 12." in html
    assert "Rina is a student." in html and "3 + 4 = 7" in html


def test_viewer_without_episodes_still_writes_a_page(tmp_path):
    assert "0 transcripts" in write_viewer(tmp_path, title="empty").read_text()
