"""The `tutorloop` command:

  tutorloop run CONFIG [--resume] [key.sub=value ...]     rounds of tutoring and training
  tutorloop eval CONFIG [--checkpoint DIR] [--out FILE]   pass@1 / pass@k of the student
  tutorloop chat CONFIG --as student|tutor                a person plays one side of a dialogue
  tutorloop config CONFIG [key.sub=value ...]             the resolved config, each field with its doc

Every command takes key.sub=value overrides of the YAML config. A mistake in the config, the
data or a path prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import yaml
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from tutorloop.errors import UserError


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    _quiet_libraries()
    try:
        from tutorloop.config import load_config

        cfg = load_config(args.config, args.overrides)
        if args.command == "config":
            print("\n".join(describe_config(cfg)))
        elif args.command == "run":
            from tutorloop.loop import run

            asyncio.run(run(cfg, resume=args.resume))
        elif args.command == "chat":
            asyncio.run(_chat(cfg, args.side, args.problem, args.checkpoint))
        else:
            asyncio.run(_eval(cfg, args.config, args.checkpoint, args.out))
    except UserError as exc:  # only user mistakes are caught: a bug keeps its traceback
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


async def _eval(cfg, config_path: str, checkpoint: str | None, out: str | None) -> None:
    """pass@1 (greedy) and, with eval.k > 0, pass@k of the student; results JSON and a W&B run."""
    from tutorloop.agents import spawn_generator
    from tutorloop.config import config_dict
    from tutorloop.envs.evaluation import evaluate, result_record
    from tutorloop.loop import prepare_run_dir
    from tutorloop.metrics import log_eval
    from tutorloop.runtime import build_runtime

    spec, adapter = _checkpoint(cfg.agents[cfg.trainable], checkpoint)
    problems = _eval_problems(cfg)
    run_dir = prepare_run_dir(cfg.run_dir)
    runtime = build_runtime(cfg.runtime)
    generator = spawn_generator(runtime, spec, cfg.seed, adapter=adapter)
    result = await evaluate(generator, problems, max_new_tokens=cfg.eval.max_new_tokens, k=cfg.eval.k,
                            samples=cfg.eval.samples, temperature=cfg.eval.temperature)
    tasks = cfg.tasks
    results = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "config": config_path,
               "source": tasks.source, "path": tasks.path, "split": tasks.split if tasks.source == "hf" else None,
               "problems": cfg.eval.problems, "model": spec.model, "checkpoint": checkpoint,
               "temperature": cfg.eval.temperature if cfg.eval.k else None, **result_record(result),
               "transfer": await _eval_transfer(cfg, generator) if cfg.eval.transfer else None}
    path = _write_results(Path(out) if out else run_dir / "eval_results.json", results)
    log_eval(results, run_dir=run_dir, name=cfg.name, config=config_dict(cfg), wandb_cfg=cfg.log.wandb)
    runtime.shutdown()
    split = "held-out split" if cfg.eval.problems == "held_out" else f"first {len(problems)}"
    print(f"eval accuracy: {result.pass_at_1:.3f} ({sum(r.correct for r in result.records)}/{len(problems)}, "
          f"greedy pass@1, {tasks.source} {split})")
    if result.pass_at_k is not None:
        print(f"eval pass@{result.k}: {result.pass_at_k:.3f} ({result.samples} samples per problem, "
              f"temperature {cfg.eval.temperature})")
    if transfer := results["transfer"]:
        print(f"eval transfer: {transfer['accuracy']:.3f} under the student's prompt, {transfer['chat_accuracy']:.3f} "
              f"under a step-by-step chat prompt ({transfer['num_problems']} problems, {transfer['source']}, greedy)")
    print(f"results: {path}")


async def _eval_transfer(cfg, generator) -> dict:
    """eval.transfer as the training loop scores it, the student's bare prompt standing for the run's."""
    from tutorloop.envs.evaluation import chat_accuracy, greedy_accuracy
    from tutorloop.loop import build_pool, transfer_set

    transfer = transfer_set(cfg, build_pool(cfg))
    print(transfer.note)
    tokens = cfg.eval.transfer.max_new_tokens
    train = await greedy_accuracy(generator, transfer.problems, max_new_tokens=tokens)
    return {"source": transfer.source, "num_problems": len(transfer.problems), "accuracy": train["accuracy"],
            "chat_accuracy": await chat_accuracy(generator, transfer.problems, max_new_tokens=tokens)}


def _eval_problems(cfg) -> list:
    """The problems `tutorloop eval` scores: the run's held-out split (as the training loop evaluates
    it), or the first tasks.num_eval of the source in its own order (a benchmark's test file)."""
    from tutorloop.tasks import build_tasks, load_problems, make_arithmetic_problems

    t = cfg.tasks
    if cfg.eval.problems == "held_out":
        # A file's held-out split does not depend on num_train, so it is not checked against the file
        # here; the arithmetic generator's does (it makes num_train + num_eval problems).
        num_train = t.num_train if t.source == "arithmetic" else 0
        return list(build_tasks(t.source, path=t.path, difficulty=t.difficulty, num_train=num_train,
                                num_eval=t.num_eval, seed=cfg.seed, max_prompt_chars=t.max_prompt_chars,
                                split=t.split, question_field=t.question_field, answer_field=t.answer_field).eval)
    if t.source == "arithmetic":
        return make_arithmetic_problems(t.num_eval, seed=cfg.seed, difficulty=t.difficulty)
    return load_problems(t.source, path=t.path, max_prompt_chars=t.max_prompt_chars, split=t.split,
                         question_field=t.question_field, answer_field=t.answer_field)[:t.num_eval]


def _write_results(path: Path, results: dict) -> Path:
    from tutorloop.checkpoint import write_file

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file(path, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise UserError(f"cannot write the eval results to '{path}' ({exc.strerror or exc}); see --out") from None
    return path


async def _chat(cfg, side: str, problem: str | None, checkpoint: str | None) -> None:
    from tutorloop.chat import chat

    if cfg.env.name != "dialogue":
        raise UserError("chat needs a tutoring config (env.name=dialogue), e.g. configs/tutoring_default.yaml")
    spec, adapter = _checkpoint(cfg.agents[cfg.trainable], checkpoint)
    await chat(cfg.model_copy(update={"agents": {**cfg.agents, cfg.trainable: spec}}), side=side, problem_id=problem,
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


def describe_config(cfg: BaseModel, prefix: str = "") -> list[str]:
    """One `dotted.key = value  # doc` line per field, in the override syntax, so any line can be
    grepped and pasted back as `key=value`; a section opens with a `# key: doc` line."""
    lines = []
    for name, field in type(cfg).model_fields.items():
        key, value, doc = f"{prefix}{name}", getattr(cfg, name), " ".join((field.description or "").split())
        if isinstance(value, BaseModel):
            lines += [f"# {key}: {doc}", *describe_config(value, f"{key}.")]
        elif value and isinstance(value, dict) and all(isinstance(v, BaseModel) for v in value.values()):
            lines.append(f"# {key}: {doc}")
            for item, section in value.items():
                lines += describe_config(section, f"{key}.{item}.")
        else:
            lines.append(f"{key} = {_yaml_value(value)}" + (f"  # {doc}" if doc else ""))
    return lines


def _yaml_value(value) -> str:
    """A flow-style YAML scalar, list or mapping, as an override would spell it."""
    text = yaml.safe_dump(to_jsonable_python(value), default_flow_style=True, sort_keys=False, width=1 << 20)
    return text.removesuffix("\n...\n").strip()


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """argparse gives every positional to the first run of them, so `eval c.yaml --out f a=b` would
    reject `a=b`: key=value words left over after the flags are overrides too."""
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if stray := [word for word in rest if word.startswith("-") or "=" not in word]:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    args.overrides = [*args.overrides, *rest]
    return args


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tutorloop", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="`tutorloop COMMAND --help` lists a command's options.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run rounds of tutoring and training")
    run.add_argument("config")
    run.add_argument("--resume", action="store_true",
                     help="continue from the newest checkpoint in run_dir (an error if there is none); "
                          "without it, a run_dir that holds a checkpoint continues from it as well")
    run.add_argument("overrides", nargs="*", help="key.sub=value")
    ev = sub.add_parser("eval", help="pass@1 (greedy) and pass@k (eval.k) of the student; results JSON and W&B")
    ev.add_argument("config")
    ev.add_argument("--checkpoint", help="a saved student (peft adapter or full HF directory)")
    ev.add_argument("--out", help="the results JSON (default: run_dir/eval_results.json)")
    ev.add_argument("overrides", nargs="*", help="key.sub=value")
    ch = sub.add_parser("chat", help="play the student or the tutor of a tutoring dialogue against a model")
    ch.add_argument("config", help="a tutoring config (env.name=dialogue)")
    ch.add_argument("--as", dest="side", choices=("student", "tutor"), required=True, help="the side you play")
    ch.add_argument("--problem", help="problem id (default: the first held-out one)")
    ch.add_argument("--checkpoint", help="a saved tutor (peft adapter or full HF directory)")
    ch.add_argument("overrides", nargs="*", help="key.sub=value")
    co = sub.add_parser("config", help="print the resolved config (YAML plus overrides), each field with its doc",
                        description="Validate CONFIG with its overrides and print every field, defaults included, "
                                    "as `dotted.key = value  # doc`, keys spelled as overrides take them.")
    co.add_argument("config", metavar="CONFIG", help="a YAML config file")
    co.add_argument("overrides", nargs="*", help="key.sub=value")
    return parser


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")


if __name__ == "__main__":
    sys.exit(main())
