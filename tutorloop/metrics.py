"""One metrics sink per run: the console (a rich progress bar and a per-round table),
`metrics.jsonl` and `episodes.jsonl` in the run dir, and Weights & Biases when configured
(offline by default: no account needed, `wandb sync` uploads later). wandb is imported only when
a run asks for it."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Sequence

from tutorloop.checkpoint import write_file
from tutorloop.config import WandbConfig
from tutorloop.envs.correction import COLUMNS
from tutorloop.types import Episode

TABLE_COLUMNS = COLUMNS
"""The default per-round table: the correction env's."""
TRANSCRIPT_COLUMNS = ["round", "problem_id", "turn", "role", "kind", "move", "text", "correct", "provenance",
                      "policy_version"]


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
                 wandb_cfg: WandbConfig, columns: Sequence[tuple[str, str, str]] = TABLE_COLUMNS,
                 first_round: int = 0, wandb_id: str | None = None) -> None:
        """columns: the console's per-round table as (title, metric key, format). first_round: rows of
        this round and later are dropped from the files first (a resumed run writes them again);
        wandb_id: the W&B run to continue."""
        self.run_dir, self.columns = run_dir, columns
        for name in ("metrics.jsonl", "episodes.jsonl"):
            keep_rounds_before(run_dir / name, first_round)
        write_file(run_dir / "config.json", json.dumps(config, indent=2) + "\n")
        self.metrics_file = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")
        self.episodes_file = open(run_dir / "episodes.jsonl", "a", encoding="utf-8")
        self.console = _rich_console() if console else None
        self.transcripts_per_round = wandb_cfg.transcripts_per_round
        self.transcript_rows: list[list[Any]] = []
        self.wandb = _start_wandb(run_dir, name, config, wandb_cfg, wandb_id) if wandb_cfg.mode != "disabled" else None

    @property
    def wandb_id(self) -> str | None:
        return self.wandb.id if self.wandb is not None else None

    def rounds(self, total: int, start: int = 0) -> Iterator[int]:
        """range(start, total), with a progress bar on the console."""
        if self.console is None or start >= total:
            yield from range(start, total)
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("rounds"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=self.console, transient=False) as progress:
            task = progress.add_task("rounds", total=total, completed=start)
            for index in range(start, total):
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
            self.console.print(_round_table(row, self.columns, header=round_index == 0))
        if self.wandb is not None:
            self._add_transcripts(round_index, episodes[:self.transcripts_per_round])
            self.wandb.log(metrics, step=round_index)

    def note(self, message: str) -> None:
        if self.console is not None:
            self.console.print(message)

    def finish(self, summary: dict[str, Any]) -> None:
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
                self.transcript_rows.append([round_index, episode.problem.id, i, turn.role, turn.kind, turn.move,
                                             turn.text, turn.correct, turn.provenance, turn.policy_version])


EVAL_COLUMNS = ["id", "correct", "answer", "sampled_correct", "reply"]


def log_eval(results: dict[str, Any], *, run_dir: Path, name: str, config: dict[str, Any],
             wandb_cfg: WandbConfig) -> str | None:
    """A `tutorloop eval` as a W&B run of its own (job type "eval", offline unless configured):
    pass@1 and pass@k in its summary and a table with one row per problem. Not a RunLog: that one
    would trim the training run's metrics.jsonl in the same run dir. Returns the W&B run id."""
    if wandb_cfg.mode == "disabled":
        return None
    import wandb

    run = _start_wandb(run_dir, f"{name}-eval", config, wandb_cfg, None, job_type="eval")
    scores = {f"eval/{key}": results[key] for key in ("pass@1", "pass@k") if results[key] is not None}
    if transfer := results.get("transfer"):
        scores |= {"eval/transfer_accuracy": transfer["accuracy"], "eval/transfer_chat_accuracy": transfer["chat_accuracy"]}
    run.log(scores)
    run.summary.update(scores | {"eval/num_problems": results["num_problems"], "eval/k": results["k"],
                                 "eval/samples": results["samples"]})
    rows = [[record[column] for column in EVAL_COLUMNS] for record in results["records"]]
    run.log({"eval/problems": wandb.Table(columns=EVAL_COLUMNS, data=rows)})
    run.finish()
    return run.id


def _rich_console() -> Any:
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:  # logs and CI: wide enough for the whole round table
        console = Console(highlight=False, width=132)
    return console


def _round_table(row: dict[str, float], columns: Sequence[tuple[str, str, str]], *, header: bool) -> Any:
    from rich.table import Table

    table = Table(show_header=header, box=None, pad_edge=False)
    for title, _, _ in columns:
        table.add_column(title, justify="right", min_width=max(len(title), 6))
    table.add_row(*(fmt.format(row[key]) if key in row else "-" for _, key, fmt in columns))
    return table


def _start_wandb(run_dir: Path, name: str, config: dict[str, Any], cfg: WandbConfig, run_id: str | None,
                 job_type: str | None = None) -> Any:
    import wandb

    # resume="allow" continues run `run_id` online. Offline, W&B writes a new offline-run-* dir with
    # the same id; `wandb sync --id ID --append DIR` adds it to the first (wandb issue #5865).
    return wandb.init(project=cfg.project, entity=cfg.entity, name=name, dir=str(run_dir), mode=cfg.mode,
                      config=config, id=run_id, resume="allow" if run_id else None, job_type=job_type,
                      settings=wandb.Settings(silent=True, console="off"))


def keep_rounds_before(path: Path, first_round: int) -> None:
    """Drop the rows of a JSONL log from `first_round` on, and a torn last line from a kill mid-write,
    so a resumed run that writes those rounds again leaves each round once. Rows start with
    `{"round": N` (RunLog writes them so), which keeps this a prefix match per line."""
    if not path.exists():
        return
    tmp = path.with_name(f".tmp-{path.name}")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        for line in src:
            match = _ROUND_PREFIX.match(line)
            complete = line.endswith(b"\n") or _parses(line)
            if match and complete and int(match[1]) < first_round:
                dst.write(line.rstrip(b"\n") + b"\n")
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, path)


_ROUND_PREFIX = re.compile(rb'\{"round": (-?\d+)[,}]')


def _parses(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True
