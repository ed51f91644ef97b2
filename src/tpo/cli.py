"""The `tpo` command: a thin layer over `tpo.pipeline`; a dict maps subcommands to functions.

    tpo run [--preset NAME | --config FILE] [--set key=value ...] [--arms tpo,direct] [--out DIR]
    tpo generate|judge|pairs|train|eval RUN_DIR --arm ARM --iteration T [--redo]
    tpo config [--preset NAME | --config FILE] [--set ...] [--reference]
    tpo presets

Errors a user can fix (config, data, model path, run directory) print one line and exit 2;
Ctrl-C exits 130 and a rerun of the same command resumes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable, Sequence

import yaml

from tpo import pipeline
from tpo.config import ConfigError, load_config, preset_names, reference
from tpo.data import DataError
from tpo.models import ModelLoadError
from tpo.records import RecordError
from tpo.store import RunDir, StoreError

STAGE_OUTPUTS = {
    "generate": ["samples.jsonl"],
    "judge": ["scores.jsonl"],
    "pairs": ["pairs.jsonl"],
    "train": ["model"],
    "eval": ["eval_samples.jsonl", "eval_scores.jsonl", "eval.json"],
}
USER_ERRORS = (ConfigError, DataError, ModelLoadError, RecordError, StoreError)


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help=f"a shipped preset: {', '.join(preset_names())}")
    p.add_argument("--config", help="a YAML config file (applied over --preset if both)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set generation.num_samples=8",
    )


def _load(args: argparse.Namespace) -> object:
    overrides = list(args.set)
    if getattr(args, "arms", None):
        overrides.append(f"arms={args.arms}")
    return load_config(args.config, args.preset, overrides)


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args)
    out = args.out or os.path.join(
        "runs",
        args.preset
        or (os.path.splitext(os.path.basename(args.config))[0] if args.config else "embedded"),
    )
    pipeline.run(config, out)  # type: ignore[arg-type]
    return 0


def cmd_stage(args: argparse.Namespace) -> int:
    run = RunDir.load(args.run_dir)
    arm, t = args.arm, args.iteration
    if arm not in ("tpo", "direct"):
        raise ConfigError(f"--arm: unknown arm {arm!r} (tpo | direct)")
    if args.command != "eval" and t < 1:
        raise ConfigError(f"--iteration: {args.command} needs an iteration >= 1")
    if args.redo:
        d = run.iter_dir(arm, t)
        for name in STAGE_OUTPUTS[args.command]:
            target = d / name
            if target.is_dir():
                shutil.rmtree(target)
            target.unlink(missing_ok=True)
        run.clear(args.command, arm, t)
    models = pipeline.Models(run)
    stages: dict[str, Callable[[], object]] = {
        "generate": lambda: pipeline.generate(run, models, arm, t),
        "judge": lambda: pipeline.judge_stage(run, arm, t),
        "pairs": lambda: pipeline.pairs(run, arm, t),
        "train": lambda: pipeline.train(run, models, arm, t),
        "eval": lambda: pipeline.evaluate(run, models, arm, t),
    }
    with run.lock():
        pipeline.prepare_data(run)
        if args.command == "eval" and (arm, t) != ("direct", 0):
            pipeline.evaluate(run, models, "direct", 0)  # the win-rate baseline
        stages[args.command]()
        summary = run.manifest()["done"].get(RunDir.stage_key(args.command, arm, t), {})
        pipeline.write_results(run)
    print(yaml.safe_dump({f"{arm}/iter_{t}/{args.command}": summary}, sort_keys=False), end="")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.reference:
        print(reference())
        return 0
    config = _load(args)
    print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")  # type: ignore[attr-defined]
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    print("\n".join(preset_names()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tpo", description="Thought Preference Optimization: teach an LLM to think first."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run (or resume) the whole loop")
    _config_args(p)
    p.add_argument("--arms", help="comma-separated arms, e.g. tpo,direct")
    p.add_argument("--out", help="run directory (default runs/PRESET)")
    p.set_defaults(func=cmd_run)
    for name in ("generate", "judge", "pairs", "train", "eval"):
        p = sub.add_parser(name, help=f"run the {name} stage of one arm and iteration")
        p.add_argument("run_dir")
        p.add_argument("--arm", default="tpo")
        p.add_argument("--iteration", type=int, default=1)
        p.add_argument("--redo", action="store_true", help="delete this stage's output and redo it")
        p.set_defaults(func=cmd_stage)
    p = sub.add_parser("config", help="print the resolved config")
    _config_args(p)
    p.add_argument("--reference", action="store_true", help="print every key with its doc")
    p.set_defaults(func=cmd_config)
    p = sub.add_parser("presets", help="list the shipped presets")
    p.set_defaults(func=cmd_presets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except USER_ERRORS as exc:
        print(f"tpo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tpo: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
