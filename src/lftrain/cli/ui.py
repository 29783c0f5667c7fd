"""`lft ui [--host] [--port] [--runs-dir]` (a CLI plugin, see lftrain.cli.PLUGINS)."""

from __future__ import annotations


def add_parsers(sub, epilog: str) -> None:
    u = sub.add_parser("ui", help="a web UI: data, recipe, training with live progress, report, try it, compare",
                       epilog=epilog, description="Start a local web UI (needs the [ui] extra: Gradio) for training "
                       "without writing YAML. It writes RUNS_DIR/NAME.yaml (a normal recipe) and trains it with "
                       "`lft train` in a subprocess. Nothing is fetched from the internet. See docs/ui.md.")
    u.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes it to the "
                   "network, without authentication)")
    u.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    u.add_argument("--runs-dir", default="runs", help="where runs, recipes and uploaded data go (default runs)")


def run(args) -> int | None:
    if args.command != "ui":
        return None
    from lftrain import api

    api.ui(host=args.host, port=args.port, runs_dir=args.runs_dir)
    return 0
