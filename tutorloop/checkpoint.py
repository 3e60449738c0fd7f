"""Checkpoints: everything a run needs to continue exactly where it stopped, written so that a crash
at any instant leaves the previous checkpoint or the new one, never half of one.

A checkpoint is the directory `run_dir/checkpoints/round-NNNNNN`, NNNNNN being the rounds done:

    <learner>/weights.safetensors     the learner's trainable tensors (its LoRA adapter, or all weights)
    <learner>/optimizer.safetensors   its optimizer's moments; the metadata holds the param groups as JSON
    <learner>/lessons.json            its lesson buffer
    ahead.json              with `loop.overlap`: the episodes already generated for the next rounds
    state.json              rounds done, each learner's policy version, RNG states, each generator's
                            sampling state, the W&B run id, eval results so far, the config, and
                            every file's size

Files go into a `.tmp-*` directory and are fsynced; the directory is renamed into place (rename is
atomic on POSIX) and its parent fsynced. A `.tmp-*` directory is a write that never finished: it is
never read, and the next start removes it. Nothing is pickled (tensors are safetensors, the rest
JSON), so loading a checkpoint runs no code.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import os
import random
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from tutorloop.errors import UserError

FORMAT = 2
"""2: one directory per learner (issue 13); 1 held one trainer's files at the top."""
PREFIX = "round-"
RESUMABLE = ("run_dir", "name", "loop.rounds", "loop.time_budget_minutes", "eval.*", "log.*", "checkpoint.*", "runtime.*",
             "agents.*.resources.*", "trainer.resources.*",
             "learners.*.resources.*")
"""Config keys (fnmatch patterns) that may differ between a run and its continuation: where things run,
what is logged and how long it goes on; none changes what a round computes from the saved state."""


@dataclass(frozen=True)
class Progress:
    """The loop's own state between rounds; with the learners' (trainer, buffer) and the generators'
    state it makes a checkpoint."""

    rounds_done: int = 0
    versions: dict[str, int] = field(default_factory=dict)
    """Learner → the policy version its agent's generator samples from (absent: 0)."""
    nonfinite_streaks: dict[str, int] = field(default_factory=dict)
    """Learner → its optimizer steps skipped in a row for a non-finite loss or gradient."""
    summary: dict[str, float] = field(default_factory=dict)
    """Eval results so far (accuracy before training)."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    state: dict[str, Any]
    """The parsed state.json."""

    @property
    def progress(self) -> Progress:
        return Progress(**self.state["progress"])

    @property
    def wandb_id(self) -> str | None:
        return self.state["wandb_id"]


class CheckpointStore:
    """The checkpoints of one run dir: find the newest complete one, save, keep the newest `keep`."""

    def __init__(self, root: Path, keep: int) -> None:
        self.root, self.keep = root, keep

    def latest(self, config: dict[str, Any], *, required: bool) -> Checkpoint | None:
        """The newest complete checkpoint, checked against `config`; None when there is none."""
        self._remove_unfinished()
        for path in reversed(self.complete()):
            checkpoint = _read(path)
            if checkpoint is None:
                continue
            if changed := config_changes(checkpoint.state["config"], config):
                raise UserError(f"{path}: the run was started with a different config ({', '.join(changed[:4])} "
                                f"differ{'' if len(changed) <= 4 else f', +{len(changed) - 4} more'}); "
                                "continue it with the same config, or choose another run_dir")
            return checkpoint
        if required:
            raise UserError(f"--resume: no complete checkpoint in '{self.root}'")
        return None

    def complete(self) -> list[Path]:
        """Finished checkpoint directories, oldest first."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))

    async def save(self, progress: Progress, *, learners: Mapping[str, Any], generators: Mapping[str, Any],
                   wandb_id: str | None, config: dict[str, Any], ahead: Mapping[int, Any] | None = None) -> Path:
        """Every learner's trainer and buffer (objects with `.trainer` and `.buffer`), the generators'
        sampling state and the loop's progress, as one checkpoint directory. `ahead`: round → its
        episodes, generated ahead of training (`loop.overlap`) and finished; a resumed run trains on
        these rather than sample them again from weights it no longer has."""
        writers: dict[str, Callable[[Path], None]] = {}
        if ahead:
            rows = {str(r): [asdict(e) for e in episodes] for r, episodes in ahead.items()}
            writers["ahead.json"] = lambda path: path.write_text(json.dumps(rows), encoding="utf-8")
        for name, learner in learners.items():
            writers |= _learner_writers(name, await learner.trainer.checkpoint_state(), learner.buffer.state())
        state = {"format": FORMAT, "progress": asdict(progress), "wandb_id": wandb_id, "config": config,
                 "rng": rng_state(), "generators": {role: await g.sampling_state() for role, g in generators.items()}}
        target = self.root / f"{PREFIX}{progress.rounds_done:06d}"
        write_dir(target, writers, state)
        self._prune()
        return target

    def _prune(self) -> None:
        for path in self.complete()[:-self.keep]:
            shutil.rmtree(path, ignore_errors=True)

    def _remove_unfinished(self) -> None:
        if self.root.is_dir():
            for path in self.root.glob(".tmp-*"):
                shutil.rmtree(path, ignore_errors=True)


def _learner_writers(name: str, trained: dict[str, Any], lessons: dict[str, Any]) -> dict[str, Callable[[Path], None]]:
    return {f"{name}/weights.safetensors": lambda path: _save_tensors(trained["weights"], path),
            f"{name}/optimizer.safetensors": lambda path: _save_optimizer(trained["optimizer"], path),
            f"{name}/lessons.json": lambda path: path.write_text(json.dumps(lessons), encoding="utf-8")}


async def restore(checkpoint: Checkpoint, *, learners: Mapping[str, Any], generators: Mapping[str, Any]) -> Progress:
    """Put every component back in the state it had when `checkpoint` was written: each learner's
    trainer and buffer, its agent's generator synced to it. RNG states go last, after everything
    that building the components may have drawn."""
    state, path, progress = checkpoint.state, checkpoint.path, checkpoint.progress
    for name, learner in learners.items():
        await learner.trainer.load_checkpoint_state({"weights": _load_tensors(path / name / "weights.safetensors"),
                                                     "optimizer": _load_optimizer(path / name / "optimizer.safetensors"),
                                                     "version": progress.versions.get(name, 0)})
        await learner.sync()
        learner.buffer.load_state(json.loads((path / name / "lessons.json").read_text(encoding="utf-8")))
    for name, generator in generators.items():
        await generator.load_sampling_state(state["generators"][name])
    set_rng_state(state["rng"])
    return progress


def episodes_ahead(checkpoint: Checkpoint | None) -> dict[int, list[Any]]:
    """The episodes `save` was given as `ahead`, by round ({} when none: no overlap, or no checkpoint)."""
    path = None if checkpoint is None else checkpoint.path / "ahead.json"
    if path is None or not path.exists():
        return {}
    return {int(r): [episode_from_row(row) for row in rows]
            for r, rows in json.loads(path.read_text(encoding="utf-8")).items()}


def episode_from_row(row: dict[str, Any]) -> Any:
    """An `Episode` back from `asdict` JSON, with its tuples and enum as they were (lessons made
    from it must equal those made from the original)."""
    from tutorloop.types import Episode, Problem, StopReason, TokenScores, Turn

    def turn(t: dict[str, Any]) -> Turn:
        s = t["teacher_scores"]
        scores = None if s is None else TokenScores(tuple(s["logprobs"]), tuple(map(tuple, s["topk_ids"])),
                                                    tuple(map(tuple, s["topk_logprobs"])))
        return Turn(**t | {"prompt": tuple(t["prompt"]), "token_ids": tuple(t["token_ids"]), "teacher_scores": scores,
                           "logprobs": tuple(t["logprobs"]), "alternatives": tuple(t["alternatives"])})

    return Episode(Problem(**row["problem"]), tuple(map(turn, row["turns"])), row["rewards"], StopReason(row["stop"]))


def config_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ, except those RESUMABLE matches. A key the saved config lacks
    counts as its default: a checkpoint from before the key existed still resumes where nothing changed."""
    a, b = (_flatten(tree) for tree in _with_defaults(saved, now))
    return sorted(key for key in a.keys() | b.keys() if a.get(key, "<absent>") != b.get(key, "<absent>")
                  and not any(fnmatch.fnmatchcase(key, pattern) for pattern in RESUMABLE))


def _with_defaults(saved: dict[str, Any], now: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both configs read through today's schema, so absent keys take their defaults; both as they are
    when either does not validate (a key since removed), and then absent differs from present."""
    from tutorloop.config import config_dict, validate_config

    try:
        return config_dict(validate_config(saved)), config_dict(validate_config(now))
    except UserError:
        return saved, now


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


# --- atomic writes -------------------------------------------------------------------------------


def write_dir(target: Path, writers: Mapping[str, Callable[[Path], None]], state: dict[str, Any]) -> None:
    """Write a directory whole or not at all: each file, then state.json listing their sizes, into a
    temp dir that is renamed to `target`. A full or read-only disk is a one-line error, and the
    temp dir is removed, so the checkpoints already there stay as they were."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        for name, write in writers.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)  # a learner's own directory
            write(tmp / name)
            _fsync(tmp / name)
        for sub in {(tmp / name).parent for name in writers} - {tmp}:
            _fsync(sub)
        files = {name: (tmp / name).stat().st_size for name in writers}
        (tmp / "state.json").write_text(json.dumps(state | {"files": files}), encoding="utf-8")
        _fsync(tmp / "state.json")
        _fsync(tmp)
        if target.exists():  # a same-round checkpoint that failed its size check: replace it
            shutil.rmtree(target)
        tmp.rename(target)
        _fsync(target.parent)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"{target.parent}: cannot write checkpoint {target.name} "
                        f"({exc.strerror or exc}); the checkpoints already there are intact") from None


def write_file(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename, so a reader never sees half a file."""
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(text, encoding="utf-8")
    _fsync(tmp)
    os.replace(tmp, path)


async def save_model(trainer: Any, target: Path) -> None:
    """trainer.save into a temp dir that then replaces `target`: a kill mid-save leaves the old one."""
    for stale in target.parent.glob(f".tmp-{target.name}-*"):  # from a save that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    await trainer.save(str(tmp))
    for path in tmp.iterdir():
        _fsync(path)
    old = target.with_name(f".old-{target.name}")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(path: Path) -> Checkpoint | None:
    """The checkpoint at `path`, or None (with a note) when its files do not match state.json:
    rename makes that impossible short of damage from outside, but such a one must never load."""
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        wrong = [name for name, size in state["files"].items() if (path / name).stat().st_size != size]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        wrong = [f"state.json ({type(exc).__name__})"]
    if not wrong and state.get("format") != FORMAT:
        wrong = [f"format {state.get('format')} (this tutorloop reads {FORMAT})"]
    if wrong:
        print(f"tutorloop: note: skipping damaged checkpoint {path}: {', '.join(wrong)}", file=sys.stderr)
        return None
    return Checkpoint(path=path, state=state)


# --- tensors ---------------------------------------------------------------------------------------


def _save_tensors(tensors: Mapping[str, Any], path: Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    save_file({name: t.detach().contiguous().cpu() for name, t in tensors.items()}, str(path), metadata=metadata)


def _load_tensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _save_optimizer(state_dict: dict[str, Any], path: Path) -> None:
    """torch optimizer state as safetensors: tensors named "<param index>.<key>", and the param
    groups (plus any non-tensor state) as JSON metadata."""
    import torch

    tensors, scalars = {}, {}
    for index, entry in state_dict["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    metadata = {"param_groups": json.dumps(state_dict["param_groups"]), "scalars": json.dumps(scalars)}
    _save_tensors(tensors, path, metadata)


def _load_optimizer(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        entries = {name: f.get_tensor(name) for name in f.keys()} | json.loads(metadata["scalars"])
    state: dict[int, dict[str, Any]] = {}
    for name, value in entries.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = json.loads(metadata["param_groups"])
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    return {"state": state, "param_groups": groups}


# --- random number generators ---------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    version, keys, gauss = random.getstate()
    name, np_keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    cuda = [_b64(s) for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
    return {"python": [version, list(keys), gauss], "numpy": [name, np_keys.tolist(), pos, has_gauss, cached],
            "torch": _b64(torch.get_rng_state()), "cuda": cuda}


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    name, np_keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(np_keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_unb64(state["torch"]))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])


def _b64(tensor: Any) -> str:
    return base64.b64encode(tensor.numpy().tobytes()).decode("ascii")


def _unb64(text: str) -> Any:
    import torch

    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)
