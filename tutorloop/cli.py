"""`tutorloop run CONFIG [key.sub=value ...]`, `tutorloop eval CONFIG [--checkpoint DIR]` and
`tutorloop chat CONFIG --as student|tutor` (a person plays one side of a tutoring dialogue).

User mistakes (config, data, paths) print one line and exit 2; nothing else is caught here.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import sys
from pathlib import Path

from tutorloop.errors import UserError


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _quiet_libraries()
    try:
        from tutorloop.config import load_config

        cfg = load_config(args.config, args.overrides)
        if args.command == "run" and cfg.dialogue is not None:  # a tutoring run
            from tutorloop.simulate import run as simulate

            if args.resume:
                raise UserError("--resume: tutoring runs (configs with a `dialogue` section) do not checkpoint yet")
            asyncio.run(simulate(cfg))
        elif args.command == "run":
            from tutorloop.loop import run

            asyncio.run(run(cfg, resume=args.resume))
        elif args.command == "chat":
            asyncio.run(_chat(cfg, args.side, args.problem, args.checkpoint))
        else:
            asyncio.run(_eval(cfg, args.checkpoint))
    except UserError as exc:
        print(f"tutorloop: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tutorloop: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a disk that filled up or went read-only mid-run
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        where = exc.filename or "the run dir"
        print(f"tutorloop: error: cannot write '{where}' ({exc.strerror}); the last "
              "checkpoint is intact: free space and run again to continue", file=sys.stderr)
        return 2
    return 0


async def _eval(cfg, checkpoint: str | None) -> None:
    from tutorloop.agents import spawn_generator
    from tutorloop.envs import build_tasks
    from tutorloop.evaluation import greedy_accuracy
    from tutorloop.runtime import build_runtime

    spec, adapter = _checkpoint(cfg.agents["student"], checkpoint)
    tasks = build_tasks(cfg.tasks.source, path=cfg.tasks.path, difficulty=cfg.tasks.difficulty,
                        num_train=cfg.tasks.num_train, num_eval=cfg.tasks.num_eval, seed=cfg.seed)
    generator = spawn_generator(build_runtime(cfg.runtime), spec, cfg.seed, adapter=adapter)
    result = await greedy_accuracy(generator, tasks.eval, max_new_tokens=cfg.eval.max_new_tokens)
    print(f"eval accuracy: {result['accuracy']:.3f} ({result['correct']:.0f}/{result['total']:.0f}, "
          f"greedy, {cfg.tasks.source} eval split)")


async def _chat(cfg, side: str, problem: str | None, checkpoint: str | None) -> None:
    from tutorloop.chat import chat

    if cfg.dialogue is None:
        raise UserError("chat needs a tutoring config (one with a `dialogue` section), e.g. configs/tutoring_default.yaml")
    spec, adapter = _checkpoint(cfg.agents["tutor"], checkpoint)
    await chat(cfg.model_copy(update={"agents": {**cfg.agents, "tutor": spec}}), side=side, problem_id=problem,
               adapter=adapter)


def _checkpoint(spec, checkpoint: str | None):
    """A role's saved model: (spec, peft adapter dir) for an adapter, (spec pointing at it, None)
    for a full HF directory."""
    if checkpoint is None:
        return spec, None
    path = Path(checkpoint)
    if not path.is_dir():
        raise UserError(f"--checkpoint: no directory at '{checkpoint}'")
    if (path / "adapter_config.json").exists():
        if not (path / "adapter_model.safetensors").exists():  # peft would fall back to a pickle file
            raise UserError(f"--checkpoint: '{checkpoint}' holds no adapter_model.safetensors; tutorloop loads "
                            "weights only from safetensors")
        return spec, str(path)
    return spec.model_copy(update={"model": str(path)}), None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tutorloop", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run rounds of tutoring and training")
    run.add_argument("config")
    run.add_argument("--resume", action="store_true",
                     help="continue from the newest checkpoint in run_dir (an error if there is none); "
                          "without it, a run_dir that holds a checkpoint continues from it as well")
    run.add_argument("overrides", nargs="*", help="key.sub=value")
    ev = sub.add_parser("eval", help="greedy accuracy of the student on the eval split")
    ev.add_argument("config")
    ev.add_argument("--checkpoint", help="a saved student (peft adapter or full HF directory)")
    ev.add_argument("overrides", nargs="*", help="key.sub=value")
    ch = sub.add_parser("chat", help="play the student or the tutor of a tutoring dialogue against a model")
    ch.add_argument("config", help="a tutoring config (with a `dialogue` section)")
    ch.add_argument("--as", dest="side", choices=("student", "tutor"), required=True, help="the side you play")
    ch.add_argument("--problem", help="problem id (default: the first held-out one)")
    ch.add_argument("--checkpoint", help="a saved tutor (peft adapter or full HF directory)")
    ch.add_argument("overrides", nargs="*", help="key.sub=value")
    return parser


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")


if __name__ == "__main__":
    sys.exit(main())
