"""The `tpo` command: a thin layer over `tpo.pipeline`; a dict maps subcommands to functions.

    tpo run [--preset NAME | --config FILE] [--set KEY=VALUE ...] [--arms A,B] [--out DIR]
    tpo generate|judge|pairs|train|select|eval RUN_DIR --arm ARM --iteration T [--redo]
    tpo eval RUN_DIR --arm tpo --iteration T [--against REF.json] [--against-arm direct]
             [--math [builtin|builtin:N|FILE]] [--export DIR [--questions FILE]]
    tpo synth [--preset NAME | --config FILE] [--set synth.KEY=VALUE ...] --out FILE
    tpo report RUN_DIR [--out FILE]
    tpo config [--preset NAME | --config FILE] [--set ...] [--reference]
    tpo presets
    tpo chat MODEL [--show-thoughts] [--thought-prompt generic|specific|none] ...
    tpo serve MODEL [--host 127.0.0.1] [--port 8000] [--api-key KEY] ...

`--set` takes any number of KEY=VALUE pairs (`--set a=1 b=2`), and may be repeated.

Errors a user can fix (config, data, model path, run directory, a full disk or a read-only
directory) print one line and exit 2; Ctrl-C exits 130 and a rerun of the same command resumes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from tpo import storage_errors
from tpo.allocator import keep_freed_memory
from tpo.config import ConfigError, RunConfig, load_config, preset_names, reference
from tpo.data import DataError
from tpo.generate import GenerationError
from tpo.judge import JudgeError
from tpo.models import ModelLoadError
from tpo.records import RecordError
from tpo.serve.engine import UNSET
from tpo.store import RunDir, StoreError
from tpo.train.launch import TrainError, world_size

STAGE_NAMES = ("generate", "judge", "pairs", "train", "select", "eval")  # pipeline.STAGES
USER_ERRORS = (
    ConfigError,
    DataError,
    GenerationError,
    JudgeError,
    ModelLoadError,
    RecordError,
    StoreError,
    TrainError,
)


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help=f"a shipped preset: {', '.join(preset_names())}")
    p.add_argument("--config", help="a YAML config file (applied over --preset if both)")
    p.add_argument(
        "--set",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config keys, e.g. --set generation.num_samples=8 iterations=2",
    )


def _load(args: argparse.Namespace) -> RunConfig:
    overrides = list(args.set)
    if getattr(args, "arms", None):
        overrides.append(f"arms={args.arms}")
    return load_config(args.config, args.preset, overrides)


def cmd_run(args: argparse.Namespace) -> int:
    if world_size() > 1:
        raise ConfigError(
            f"tpo run was started in {world_size()} processes: it would generate and judge in "
            "each; run it once with train.launcher: accelerate (only training is launched), or "
            "launch `tpo train RUN --arm A --iteration T` instead"
        )
    config = _load(args)
    out = args.out or os.path.join(
        "runs",
        args.preset
        or (os.path.splitext(os.path.basename(args.config))[0] if args.config else "embedded"),
    )
    from tpo.pipeline import run

    run(config, out)
    return 0


def cmd_stage(args: argparse.Namespace) -> int:
    from tpo import pipeline
    from tpo.eval.results import write_results
    from tpo.eval.tracking import track
    from tpo.generate.pool import Generators

    run = RunDir.load(args.run_dir)
    arm, t = args.arm, args.iteration
    arms = run.config.arm_order
    for option, name in (("--arm", arm), ("--against-arm", getattr(args, "against_arm", None))):
        if name is not None and name not in arms:
            raise ConfigError(f"{option}: unknown arm {name!r} (this run's: {' | '.join(arms)})")
    if args.command != "eval" and t < 1:
        raise ConfigError(f"--iteration: {args.command} needs an iteration >= 1")
    if world_size() > 1:
        return _stage_launched(run, args)
    if args.command == "eval" and args.questions and not args.export:
        raise ConfigError("--questions goes with --export DIR")
    models = Generators.for_run(run.config, log_dir=run.root)
    with run.lock():
        if args.redo:  # under the lock: never delete what another process writes
            _redo(run, args.command, arm, t)
        try:
            summary = pipeline.run_stage(run, models, args.command, arm=arm, iteration=t)
            extras = _eval_extras(run, models, args) if args.command == "eval" else {}
        finally:
            models.release()  # no model server left running
        rows = write_results(run)
        if args.command == "eval":
            track(run, rows)  # TensorBoard / W&B: the values not logged yet
    out = {f"{arm}/iter_{t}/{args.command}": summary, **extras}
    print(yaml.safe_dump(out, sort_keys=False), end="")
    return 0


def _redo(run: RunDir, command: str, arm: str, t: int) -> None:
    """Delete a stage's files and manifest entry (a new training also undoes its selection)."""
    from tpo import pipeline
    from tpo.eval.suite import clear_eval

    d = run.iter_dir(arm, t)
    if command == "select" and (d / "select" / "selection.json").is_file():
        raise ConfigError(
            "--redo: the select stage kept one model and removed the other checkpoints; "
            f"redo the train stage (tpo train {run.root} --arm {arm} --iteration {t} --redo)"
        )
    for stage in (command, "select") if command == "train" else (command,):
        for pattern in pipeline.STAGES[stage][1]:
            for target in d.glob(pattern):
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink()
        run.clear(stage, arm, t)
    if command == "eval":  # and what compared this model's old outputs
        clear_eval(run, arm, t)


def _stage_launched(run: RunDir, args: argparse.Namespace) -> int:
    """`tpo train` in each process of a distributed launcher: all train, rank 0 records."""
    from tpo.train import train_launched

    if args.command != "train" or args.redo:
        what = "--redo" if args.command == "train" else f"tpo {args.command}"
        raise ConfigError(f"{what} runs in one process; only `tpo train` can be launched")
    summary = train_launched(run, arm=args.arm, iteration=args.iteration)
    if summary is not None:
        entry = {k: v for k, v in summary.items() if k != "ranks"}
        out = {f"{args.arm}/iter_{args.iteration}/train": entry}
        print(yaml.safe_dump(out, sort_keys=False), end="")
    return 0


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--against",
        metavar="REF.json",
        help="win rate (both orders, with AlpacaEval's length-controlled one) against reference "
        "outputs in AlpacaEval format: [{instruction, output, generator}]",
    )
    p.add_argument(
        "--against-arm",
        metavar="ARM",
        help="head-to-head against ARM's model at the same iteration (e.g. direct), per category",
    )
    p.add_argument(
        "--math",
        nargs="?",
        const="builtin",
        metavar="SET",
        help="GSM8K-format accuracy on builtin (default), builtin:N or a question/answer JSONL",
    )
    p.add_argument(
        "--export", metavar="DIR", help="write the responses in AlpacaEval and Arena-Hard formats"
    )
    p.add_argument(
        "--questions",
        metavar="FILE",
        help="with --export: answer these instead of the held-out split (AlpacaEval JSON, "
        "Arena-Hard question.jsonl or tpo instruction JSONL)",
    )


def _eval_extras(run: RunDir, models: object, args: argparse.Namespace) -> dict:
    from tpo.eval.suite import extra_evals

    return extra_evals(
        run,
        models,  # type: ignore[arg-type]
        arm=args.arm,
        iteration=args.iteration,
        against=args.against,
        against_arm=args.against_arm,
        math=args.math,
        export_dir=args.export,
        questions=args.questions,
    )


def cmd_synth(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tpo.generate.pool import Generators
    from tpo.synth import synthesize

    config = _load(args)
    out = Path(args.out)
    models = Generators.for_run(config, log_dir=out.parent)
    try:
        summary = synthesize(config, models, out=out)
    finally:
        models.release()  # no model server left running
    print(yaml.safe_dump(summary, sort_keys=False), end="")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from tpo.eval.results import write_results
    from tpo.report import write_report

    run = RunDir.load(args.run_dir)
    if not (run.root / "results.json").exists():
        write_results(run)
    print(write_report(run.root, args.out))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.reference:
        print(reference())
        return 0
    config = _load(args)
    print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    print("\n".join(preset_names()))
    return 0


def _serving_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        help="RUN/ARM/iter_T/model (its thought format is read from the run's config.yaml), "
        "a local path or HF id, 'embedded' or 'tiny-random'",
    )
    p.add_argument(
        "--thought-prompt",
        choices=("generic", "specific", "none"),
        help="the thought format the model was trained with (default: the run's, else generic)",
    )
    p.add_argument(
        "--no-marker",
        choices=("content", "reasoning"),
        default="content",
        help="an output without a response marker is all content (default) or all reasoning",
    )
    p.add_argument(
        "--thought-budget",
        default=UNSET,
        metavar="N|off",
        help="budget forcing: append the response marker after N thought tokens without one; "
        "off (like generation.thought_budget: null) turns it off (default: the run's "
        "generation.thought_budget, else off)",
    )
    p.add_argument("--max-tokens", type=int, default=512, help="default new tokens per answer")
    p.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16"),
        default="auto",
        help="auto (default): bfloat16 where the device computes it natively (a CPU with "
        "avx512_bf16 or amx_bf16, a GPU with bf16 units), else float32, as generation.dtype",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument(
        "--backend",
        choices=("auto", "hf", "native"),
        default="auto",
        help="native: tpo's CPU loop for Llama-family models, concurrent requests decoded in "
        "the same batches; hf: transformers generate, one request at a time; auto (default): "
        "native where it runs (a Llama-family model on the CPU), else hf",
    )
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load weights in pickle formats (.bin, .pt), which can run code (default: "
        "safetensors only)",
    )


def _engine(args: argparse.Namespace) -> tuple[Any, str]:
    from tpo.models import resolve_dtype
    from tpo.serve.engine import load_engine, pick_backend, resolve_settings

    settings = resolve_settings(
        args.model, args.thought_prompt, args.no_marker, args.thought_budget
    )
    backend = args.backend
    if backend == "auto":
        backend = pick_backend(args.model, args.device, args.trust_remote_code)
    dtype = resolve_dtype(args.dtype, args.device)
    engine = load_engine(
        args.model,
        settings,
        dtype,
        args.device,
        args.trust_remote_code,
        backend,
        allow_pickle=args.allow_pickle,
    )
    budget = f", thought budget {settings.thought_budget}" if settings.thought_budget else ""
    return engine, f"{backend} backend, {dtype}, thought format from {settings.source}{budget}"


def cmd_chat(args: argparse.Namespace) -> int:
    from tpo.serve.chat import chat
    from tpo.serve.engine import sampling_params

    params = sampling_params(args.temperature, args.top_p, args.max_tokens)
    engine, about = _engine(args)
    print(f"tpo chat: {args.model}, {about}", file=sys.stderr)
    return chat(engine, params, args.show_thoughts, args.system, args.seed)


def cmd_serve(args: argparse.Namespace) -> int:
    from tpo.serve.engine import sampling_params
    from tpo.serve.server import ServerConfig, make_server, serve

    sampling_params(1.0, 1.0, args.max_tokens)  # checks --max-tokens
    if args.max_body_bytes < 1024:
        raise ConfigError("--max-body-bytes: must be >= 1024")
    api_key = args.api_key or os.environ.get("TPO_API_KEY") or None
    name = args.served_model_name or args.model
    config = ServerConfig(name, api_key, args.max_tokens, args.max_body_bytes)
    engine, about = _engine(args)
    server = make_server(engine, config, args.host, args.port, args.verbose)
    key = "API key required" if api_key else "no API key"
    return serve(server, f"model {name!r}, {about}, {key}; ")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tpo", description="Thought Preference Optimization: teach an LLM to think first."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run (or resume) the whole loop")
    _config_args(p)
    p.add_argument("--arms", help="comma-separated arms, e.g. direct,generic,specific")
    p.add_argument("--out", help="run directory (default runs/PRESET)")
    p.set_defaults(func=cmd_run)
    for name in STAGE_NAMES:
        p = sub.add_parser(name, help=f"run the {name} stage of one arm and iteration")
        p.add_argument("run_dir")
        p.add_argument("--arm", default="tpo")
        p.add_argument("--iteration", type=int, default=1)
        p.add_argument("--redo", action="store_true", help="delete this stage's output and redo it")
        if name == "eval":
            _eval_args(p)
        p.set_defaults(func=cmd_stage)
    p = sub.add_parser("synth", help="write new instructions by few-shot prompting an LLM")
    _config_args(p)
    p.add_argument("--out", required=True, help="instruction file to write; rerun to resume")
    p.set_defaults(func=cmd_synth)
    p = sub.add_parser("report", help="write RUN_DIR/report.html (plots, tables, examples)")
    p.add_argument("run_dir")
    p.add_argument("--out", help="where to write the HTML (default RUN_DIR/report.html)")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("config", help="print the resolved config")
    _config_args(p)
    p.add_argument("--reference", action="store_true", help="print every key with its doc")
    p.set_defaults(func=cmd_config)
    p = sub.add_parser("presets", help="list the shipped presets")
    p.set_defaults(func=cmd_presets)
    p = sub.add_parser("chat", help="chat with a model in the terminal; its thoughts stay hidden")
    _serving_args(p)
    p.add_argument("--show-thoughts", action="store_true", help="print the thoughts too, live")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, help="seed of the first answer (then +1 per turn)")
    p.add_argument("--system", help="a system message")
    p.set_defaults(func=cmd_chat)
    p = sub.add_parser("serve", help="an OpenAI-compatible server; thoughts go in `reasoning`")
    _serving_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (or set TPO_API_KEY)")
    p.add_argument("--served-model-name", help="the model id clients send (default: MODEL)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="request size limit")
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()  # page faults were ~30% of a CPU training run's time (allocator.py)
    try:
        return int(args.func(args))
    except USER_ERRORS as exc:
        print(f"tpo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tpo: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # a full disk or a read-only directory, raised by any library
        line = storage_errors.describe(exc)
        if line is None:
            raise
        print(f"tpo: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
