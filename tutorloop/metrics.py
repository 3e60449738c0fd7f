"""One metrics sink per run: the console (a rich progress bar and a per-round table),
`metrics.jsonl` and `episodes.jsonl` in the run dir, and Weights & Biases when configured
(offline by default: no account needed, `wandb sync` uploads later). wandb is imported only when
a run asks for it."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Sequence

from tutorloop.config import WandbConfig
from tutorloop.types import Episode

TABLE_COLUMNS = (("round", "round", "{:.0f}"), ("first try", "episodes/first_try_acc", "{:.2f}"),
                 ("after feedback", "episodes/after_feedback_acc", "{:.2f}"),
                 ("corrections ok", "episodes/corrections_accepted_rate", "{:.2f}"),
                 ("sft", "loss/sft", "{:.3f}"), ("dpo", "loss/dpo", "{:.3f}"), ("opd", "loss/opd", "{:.3f}"),
                 ("KL t-s", "kl/teacher_student", "{:.3f}"), ("gen tok/s", "gen/student_tokens_per_s", "{:.0f}"),
                 ("s", "round/seconds", "{:.1f}"))
TRANSCRIPT_COLUMNS = ["round", "problem_id", "turn", "role", "kind", "text", "correct", "provenance", "policy_version"]


def episode_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
    n = max(len(episodes), 1)
    total = {key: sum(e.rewards.get(key, 0.0) for e in episodes) for key in
             ("first_try", "final", "corrections", "corrections_accepted", "reference_fallbacks", "hint_leaks")}
    return {
        "episodes/first_try_acc": total["first_try"] / n,
        "episodes/after_feedback_acc": total["final"] / n,
        "episodes/corrections": total["corrections"],
        "episodes/corrections_accepted_rate": total["corrections_accepted"] / max(total["corrections"], 1.0),
        "episodes/reference_fallbacks": total["reference_fallbacks"],
        "episodes/hint_leaks": total["hint_leaks"],
        "episodes/turns_mean": sum(len(e.turns) for e in episodes) / n,
    }


def episode_record(round_index: int, episode: Episode) -> dict[str, Any]:
    """An episode as JSON: every turn with its prompt, tokens, log-probs and version. Teacher top-k
    lists are left out (20 floats per token); the teacher's per-token log-probs stay."""
    record = asdict(episode)
    for turn in record["turns"]:
        if turn["teacher_scores"]:
            turn["teacher_scores"] = {"logprobs": turn["teacher_scores"]["logprobs"]}
    return {"round": round_index, **record}


class RunLog:
    def __init__(self, run_dir: Path, *, name: str, config: dict[str, Any], console: bool,
                 wandb_cfg: WandbConfig) -> None:
        self.run_dir = run_dir
        self.metrics_file = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")
        self.episodes_file = open(run_dir / "episodes.jsonl", "a", encoding="utf-8")
        self.console = _rich_console() if console else None
        self.transcripts_per_round = wandb_cfg.transcripts_per_round
        self.transcript_rows: list[list[Any]] = []
        self.wandb = _start_wandb(run_dir, name, config, wandb_cfg) if wandb_cfg.mode != "disabled" else None

    def rounds(self, total: int) -> Iterator[int]:
        """range(total), with a progress bar on the console."""
        if self.console is None or total == 0:
            yield from range(total)
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("rounds"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=self.console, transient=False) as progress:
            task = progress.add_task("rounds", total=total)
            for index in range(total):
                yield index
                progress.advance(task)

    def write(self, round_index: int, metrics: dict[str, float], episodes: Sequence[Episode]) -> None:
        row = {"round": round_index, **metrics}
        self.metrics_file.write(json.dumps(row) + "\n")
        self.metrics_file.flush()
        for episode in episodes:
            self.episodes_file.write(json.dumps(episode_record(round_index, episode)) + "\n")
        self.episodes_file.flush()
        if self.console is not None:
            self.console.print(_round_table(row, header=round_index == 0))
        if self.wandb is not None:
            self._add_transcripts(round_index, episodes[:self.transcripts_per_round])
            self.wandb.log(metrics, step=round_index)

    def note(self, message: str) -> None:
        if self.console is not None:
            self.console.print(message)

    def finish(self, summary: dict[str, float]) -> None:
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        if self.wandb is not None:
            import wandb

            self.wandb.summary.update(summary)
            if self.transcript_rows:
                self.wandb.log({"transcripts": wandb.Table(columns=TRANSCRIPT_COLUMNS, data=self.transcript_rows)})
            self.wandb.finish()
        self.metrics_file.close()
        self.episodes_file.close()

    def _add_transcripts(self, round_index: int, episodes: Sequence[Episode]) -> None:
        for episode in episodes:
            for i, turn in enumerate(episode.turns):
                self.transcript_rows.append([round_index, episode.problem.id, i, turn.role, turn.kind, turn.text,
                                             turn.correct, turn.provenance, turn.policy_version])


def _rich_console() -> Any:
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:  # logs and CI: wide enough for the whole round table
        console = Console(highlight=False, width=132)
    return console


def _round_table(row: dict[str, float], *, header: bool) -> Any:
    from rich.table import Table

    table = Table(show_header=header, box=None, pad_edge=False)
    for title, _, _ in TABLE_COLUMNS:
        table.add_column(title, justify="right", min_width=max(len(title), 6))
    table.add_row(*(fmt.format(row[key]) if key in row else "-" for _, key, fmt in TABLE_COLUMNS))
    return table


def _start_wandb(run_dir: Path, name: str, config: dict[str, Any], cfg: WandbConfig) -> Any:
    import wandb

    return wandb.init(project=cfg.project, entity=cfg.entity, name=name, dir=str(run_dir), mode=cfg.mode,
                      config=config, settings=wandb.Settings(silent=True, console="off"))
