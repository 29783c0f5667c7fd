"""`lft <command>`: a thin map from subcommands to `lftrain.api` functions."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from lftrain.errors import EXIT_CRASH, LftError

# Subcommands contributed by other parts of the package, one module each. A module defines
# `add_parsers(sub, epilog)` (adds its subparsers; import nothing heavy at module level, `lft --help` must stay
# fast) and `run(args) -> int | None` (handles args.command if it is one of its own, else returns None).
# A new command is a new module plus one line here.
PLUGINS: tuple[str, ...] = (
    "lftrain.cli.generate",
    "lftrain.cli.evidence",
    "lftrain.cli.tune",
    "lftrain.cli.plan",
    "lftrain.cli.data",
    "lftrain.cli.serve",
    "lftrain.cli.ui",
)

EPILOG = """exit codes: 0 success; 1 internal error (a bug: please report it); 2 your input is wrong (recipe, data,
arguments, model directory: the message names the file, line/row and field); 3 the run directory forbids it
(a finished run is never overwritten); 4 the run finished but failed its eval.fail_if gate (model saved; also
`lft compare --fail-if-worse`); 5 training could not go on (non-finite loss, out of memory at micro-batch 1,
disk full); 130 interrupted; 143 stopped by SIGTERM after a checkpoint (run again to resume)."""


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s lft: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers

        # The "classifier weights newly initialised" report is expected when fine-tuning; keep real errors only.
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()  # our own log lines say what is loading
    except ImportError:
        pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lft", description="lftrain: fine-tune pre-trained models from a YAML recipe.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"lftrain {_version()}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="fine-tune as a recipe says (resumes an unfinished run)", epilog=EPILOG,
                       description="Fine-tune a model as RECIPE says and write a run directory (output.dir): "
                       "the resolved recipe, manifest, checkpoints, metrics.jsonl and the final model. Running it "
                       "again on an unfinished run resumes from the newest complete checkpoint.")
    t.add_argument("recipe", help="recipe YAML file (see docs/recipes.md for every key)")
    t.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="override recipe keys, e.g. train.lr=1e-4 train.epochs=1 (values are parsed as YAML)")
    t.add_argument("--new-run", action="store_true",
                   help="if output.dir holds a run, start a new one beside it (DIR-2, DIR-3, ...) instead")
    t.add_argument("--allow-recipe-change", action="store_true",
                   help="resume an unfinished run even though the recipe changed since it started")
    _add_launch_args(t)

    e = sub.add_parser("evaluate", help="metrics of a trained run on a labelled data file", epilog=EPILOG,
                       description="Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix of "
                       "a trained run on DATA (same columns as the recipe's training data).")
    e.add_argument("run", help="run directory written by `lft train`")
    e.add_argument("--data", required=True, help="labelled data file (CSV/TSV/JSONL/Parquet/saved dataset)")
    e.add_argument("--encoding", help="text encoding of DATA (default: the recipe's data.encoding)")
    e.add_argument("--output", help="also write the metrics as JSON to this file")

    r = sub.add_parser("predict", help="labels and class probabilities for new texts", epilog=EPILOG,
                       description="Predict a label and the class probabilities for every row of INPUT, in input "
                       "order, as JSON lines: {\"row\": N, \"label\": ..., \"probs\": {label: p, ...}}; "
                       "speech-recognition runs transcribe each clip: {\"row\": N, \"file\": ..., \"text\": ...}.")
    r.add_argument("run", help="run directory written by `lft train`")
    r.add_argument("--input", required=True, nargs="+",
                   help="data file with the recipe's text column(s), labels not needed; image/audio tasks: also a "
                   "folder or several files")
    r.add_argument("--output", required=True, help="where to write predictions (JSON lines)")
    r.add_argument("--encoding", help="text encoding of INPUT (default: the recipe's data.encoding)")
    r.add_argument("--no-temperature", action="store_true",
                   help="raw probabilities: do not apply the temperature stored in model/calibration.json")

    x = sub.add_parser("export", help="write a trained run's model as a plain Hugging Face model", epilog=EPILOG,
                       description="Write the model of RUN to DIR as a plain Hugging Face model directory "
                       "(safetensors weights, tokenizer, config.json with the label names), loadable with "
                       "transformers alone. Full and freeze runs are copied; adapter runs (lora, dora, ia3) "
                       "need --merge. DIR must not exist or be empty.")
    x.add_argument("run", help="run directory written by `lft train`")
    x.add_argument("--output", required=True, metavar="DIR", help="new (or empty) directory to write the model to")
    x.add_argument("--merge", action="store_true",
                   help="fold an adapter into the base model's weights (required for lora/dora/ia3 runs; the "
                   "result runs without peft, as fast as the base model)")
    x.add_argument("--quantize", choices=["int8"],
                   help="dynamic int8 quantisation of the linear layers (smaller, faster on CPU); checked against "
                   "the fp32 model on probe sentences (export.json)")
    x.add_argument("--format", choices=["hf", "onnx", "gguf"], default="hf",
                   help="hf: Hugging Face directory (default); onnx: model.onnx for onnxruntime, checked against "
                   "the torch outputs; gguf: one file for llama.cpp/Ollama (causal-lm-sft runs, Llama architecture)")
    x.add_argument("--gguf-type", choices=["f16", "q8_0"], default=None,
                   help="with --format gguf: f16 (default) or q8_0 (8-bit blocks, about half the size); the file is "
                   "read back and compared with the torch model (export.json)")
    for plugin in _plugins():
        plugin.add_parsers(sub, EPILOG)
    return p


def _add_launch_args(t: argparse.ArgumentParser) -> None:
    g = t.add_argument_group("several processes or nodes (torchrun; see docs/distributed.md)")
    g.add_argument("--nproc", type=int, metavar="N", help="train data-parallel on N processes on this node "
                   "(one per GPU, or CPU processes with gloo); train.strategy picks ddp or fsdp")
    g.add_argument("--nnodes", type=int, default=1, metavar="M", help="number of nodes (default 1)")
    g.add_argument("--node-rank", type=int, default=0, metavar="R", help="this node's index, 0..M-1")
    g.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help="rendezvous address, the same on every node "
                   "(needed when --nnodes > 1)")


def _plugins():
    import importlib

    return [importlib.import_module(name) for name in PLUGINS]


def _version() -> str:
    from lftrain import __version__

    return __version__


def _dispatch(args: argparse.Namespace) -> int:
    from lftrain import api

    if args.command == "train" and args.nproc:  # data-parallel: torchrun starts the workers (docs/distributed.md)
        from lftrain.config import load_recipe
        from lftrain.orchestrator.launch import run_torchrun, torchrun_command

        load_recipe(args.recipe, args.overrides)  # a bad recipe stops here with exit 2, before any worker starts
        return run_torchrun(torchrun_command(args.recipe, args.overrides, nproc=args.nproc, nnodes=args.nnodes,
                                             node_rank=args.node_rank, rdzv_endpoint=args.rdzv_endpoint,
                                             new_run=args.new_run, allow_recipe_change=args.allow_recipe_change,
                                             verbose=args.verbose))
    if args.command == "train":
        api.train(args.recipe, args.overrides, new_run=args.new_run, allow_recipe_change=args.allow_recipe_change)
    elif args.command == "evaluate":
        api.evaluate(args.run, args.data, encoding=args.encoding, output=args.output)
    elif args.command == "predict":
        inputs = args.input[0] if len(args.input) == 1 else args.input  # several files: image/audio tasks
        api.predict(args.run, inputs, args.output, encoding=args.encoding, temperature=not args.no_temperature)
    elif args.command == "export":
        api.export(args.run, args.output, merge=args.merge, quantize=args.quantize, format=args.format,
                   gguf_type=args.gguf_type)
    else:
        for plugin in _plugins():
            code = plugin.run(args)
            if code is not None:
                return code
        raise AssertionError(f"no handler for command {args.command!r}")
    return 0


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the `lft` command itself (not a call from Python): run on tcmalloc/jemalloc if present
        from lftrain.accel import allocator

        allocator.ensure(sys.argv[1:])
    parser = build_parser()
    # Overrides may follow flags (`lft train r.yaml --new-run train.lr=1e-4`), which argparse's positional
    # handling cannot take after an option; collect the stragglers that look like overrides.
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if getattr(args, "overrides", None) is None or "=" not in a or a.startswith("-")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    _setup_logging(args.verbose)
    try:
        return _dispatch(args)
    except LftError as exc:
        print(f"lft: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("lft: interrupted; run `lft train` again on the same recipe to resume", file=sys.stderr)
        return 130
    except Exception:  # a bug: show everything
        traceback.print_exc()
        print("lft: internal error (exit 1). This is a bug in lftrain, not in your input.", file=sys.stderr)
        return EXIT_CRASH
