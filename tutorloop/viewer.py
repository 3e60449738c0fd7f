"""A transcript viewer: one self-contained HTML file (inline CSS, no script, nothing fetched) written
next to `episodes.jsonl`, so a run dir can be opened in any browser, attached to a report or
copied off a cluster as is.

Every episode is a card: the problem, the simulated student's persona and wrong solution when there
is one, then the turns as speech bubbles coloured by role, each tutor turn with its move tag.
It reads `episodes.jsonl` records, so it shows correction episodes and tutoring dialogues alike.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any, Iterable

VIEWER_FILE = "transcripts.html"
ROLE_COLOURS = {"tutor": "#dbeafe", "sim_student": "#fde7cf", "student": "#dcfce7", "teacher": "#ede9fe",
                "mentor": "#ccfbf1", "tagger": "#f1f5f9"}
MOVE_COLOURS = {"focus": "#2563eb", "probing": "#059669", "telling": "#dc2626", "generic": "#64748b"}
ROLE_NAMES = {"sim_student": "student"}

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 960px; color: #0f172a; background: #f8fafc; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #cbd5e1; }
details { background: #fff; border: 1px solid #e2e8f0; border-radius: 8px; margin: 10px 0; padding: 8px 14px; }
summary { cursor: pointer; font-weight: 600; }
.problem { color: #334155; margin: 8px 0; white-space: pre-wrap; }
.turn { border-radius: 10px; padding: 8px 12px; margin: 8px 0; max-width: 80%; white-space: pre-wrap; }
.turn.right { margin-left: auto; }
.who { font-size: 12px; font-weight: 700; text-transform: uppercase; color: #475569; }
.meta { font-size: 11px; color: #64748b; margin-top: 4px; }
.tag { display: inline-block; color: #fff; border-radius: 9px; padding: 0 8px; font-size: 11px; font-weight: 700;
       margin-left: 6px; text-transform: lowercase; }
.badge { display: inline-block; border-radius: 9px; padding: 0 8px; font-size: 12px; margin-left: 6px; background: #e2e8f0; }
.good { background: #bbf7d0; } .bad { background: #fecaca; }
.alt { font-size: 12px; color: #64748b; margin-top: 4px; }
.legend span { margin-right: 10px; }
"""


def write_viewer(run_dir: str | Path, *, title: str) -> Path:
    """Render `run_dir/episodes.jsonl` into `run_dir/transcripts.html`; returns the HTML's path."""
    run_dir = Path(run_dir)
    source = run_dir / "episodes.jsonl"
    lines = source.read_text(encoding="utf-8").splitlines() if source.exists() else []
    out = run_dir / VIEWER_FILE
    out.write_text(render([json.loads(line) for line in lines if line.strip()], title), encoding="utf-8")
    return out


def render(records: list[dict[str, Any]], title: str) -> str:
    rounds: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        rounds.setdefault(int(record.get("round", 0)), []).append(record)
    roles = {t.get("role") for r in records for t in r.get("turns", [])}
    body = [f"<h1>{escape(title)}</h1>", _legend(roles), f"<p>{len(records)} transcripts in {len(rounds)} round(s).</p>"]
    for r, episodes in sorted(rounds.items()):
        body.append(f"<h2>Round {r}</h2>")
        body += [_episode(e, open_=(i == 0 and r == min(rounds))) for i, e in enumerate(episodes)]
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")


def _legend(present: set[str]) -> str:
    roles = "".join(f'<span><span class=badge style="background:{c}">{escape(ROLE_NAMES.get(r, r))}</span></span>'
                    for r, c in ROLE_COLOURS.items() if r in present)
    moves = "".join(f'<span><span class=tag style="background:{c}">{m}</span></span>' for m, c in MOVE_COLOURS.items())
    return f"<p class=legend>{roles}<br>{moves}</p>"


def _episode(record: dict[str, Any], *, open_: bool) -> str:
    problem = record.get("problem", {})
    parts = [f"<summary>{escape(str(problem.get('id', '?')))}{_outcome(record.get('rewards', {}))}</summary>",
             f"<div class=problem><b>Problem.</b> {escape(problem.get('prompt', ''))}"
             f" <b>Answer:</b> {escape(str(problem.get('answer')))}</div>"]
    if problem.get("persona"):
        parts.append(f"<div class=problem><b>Student.</b> {escape(problem['persona'])}</div>")
    if problem.get("incorrect_solution"):
        parts.append(f"<div class=problem><b>Their solution.</b> {escape(problem['incorrect_solution'])}</div>")
    parts += [_turn(t) for t in record.get("turns", [])]
    return f"<details{' open' if open_ else ''}>{''.join(parts)}</details>"


def _outcome(rewards: dict[str, float]) -> str:
    if "success" in rewards:  # a tutoring dialogue
        return (_badge("success", rewards["success"] > 0) + _badge("told", rewards.get("telling", 0) > 0, good=False)
                + f"<span class=badge>{rewards.get('student_replies', 0):.0f} replies</span>")
    if "final" in rewards:  # a correction episode
        return _badge("first try", rewards.get("first_try", 0) > 0) + _badge("final", rewards["final"] > 0)
    return ""


def _badge(label: str, on: bool, *, good: bool = True) -> str:
    cls = ("good" if good else "bad") if on else ""
    return f"<span class='badge {cls}'>{escape(label)}: {'yes' if on else 'no'}</span>"


def _turn(turn: dict[str, Any]) -> str:
    role = turn.get("role", "?")
    move = turn.get("move")
    tag = f'<span class=tag style="background:{MOVE_COLOURS.get(move, "#64748b")}">{escape(move)}</span>' if move else ""
    side = " right" if role in ("sim_student", "student") else ""
    meta = _meta(turn)
    alts = _alternatives(turn.get("alternatives") or ())
    return (f'<div class="turn{side}" style="background:{ROLE_COLOURS.get(role, "#f1f5f9")}">'
            f"<div class=who>{escape(ROLE_NAMES.get(role, role))}{tag}</div>{escape(turn.get('text', ''))}"
            f"<div class=meta>{meta}</div>{alts}</div>")


def _meta(turn: dict[str, Any]) -> str:
    bits = [f"{turn.get('provenance', 'model')}", f"policy v{turn.get('policy_version', 0)}"]
    if turn.get("token_ids"):
        bits.append(f"{len(turn['token_ids'])} tokens")
    if turn.get("correct") is not None:
        bits.append("has the answer" if turn["correct"] else "not the answer")
    return escape(" · ".join(bits))


def _alternatives(alternatives: Iterable[str]) -> str:
    return "".join(f"<div class=alt>also sampled: {escape(a)}</div>" for a in alternatives)
