"""`tutorloop run CONFIG [key.sub=value ...]` and `tutorloop eval CONFIG [--checkpoint DIR]`.

User mistakes (config, data, paths) print one line and exit 2; nothing else is caught here.
"""

from __future__ import annotations

import argparse
import asyncio
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
        if args.command == "run":
            from tutorloop.loop import run

            asyncio.run(run(cfg))
        else:
            asyncio.run(_eval(cfg, args.checkpoint))
    except UserError as exc:
        print(f"tutorloop: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tutorloop: interrupted", file=sys.stderr)
        return 130
    return 0


async def _eval(cfg, checkpoint: str | None) -> None:
    from tutorloop.agents import spawn_generator
    from tutorloop.envs import build_tasks
    from tutorloop.evaluation import greedy_accuracy
    from tutorloop.runtime import build_runtime

    spec, adapter = cfg.agents["student"], None
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_dir():
            raise UserError(f"--checkpoint: no directory at '{checkpoint}'")
        if (path / "adapter_config.json").exists():
            adapter = str(path)
        else:
            spec = spec.model_copy(update={"model": str(path)})
    tasks = build_tasks(cfg.tasks.source, path=cfg.tasks.path, difficulty=cfg.tasks.difficulty,
                        num_train=cfg.tasks.num_train, num_eval=cfg.tasks.num_eval, seed=cfg.seed)
    generator = spawn_generator(build_runtime(cfg.runtime), spec, cfg.seed, adapter=adapter)
    result = await greedy_accuracy(generator, tasks.eval, max_new_tokens=cfg.eval.max_new_tokens)
    print(f"eval accuracy: {result['accuracy']:.3f} ({result['correct']:.0f}/{result['total']:.0f}, "
          f"greedy, {cfg.tasks.source} eval split)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tutorloop", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run rounds of tutoring and training")
    run.add_argument("config")
    run.add_argument("overrides", nargs="*", help="key.sub=value")
    ev = sub.add_parser("eval", help="greedy accuracy of the student on the eval split")
    ev.add_argument("config")
    ev.add_argument("--checkpoint", help="a saved student (peft adapter or full HF directory)")
    ev.add_argument("overrides", nargs="*", help="key.sub=value")
    return parser


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")


if __name__ == "__main__":
    sys.exit(main())
