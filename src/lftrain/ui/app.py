"""`lft ui`: the Gradio app. Six pages over one form; each page's logic lives in a Gradio-free module
(data.py, forms.py, progress.py, jobs.py, runs.py) so it is tested without a browser."""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lftrain.ui.forms import FormValues
from lftrain.ui.jobs import Jobs
from lftrain.ui.progress import RunWatcher
from lftrain.ui.runs import Predictor

log = logging.getLogger("lftrain")


@dataclass
class Context:
    """What the pages share: where runs go, the training processes, loaded models, and the form's components."""

    runs_dir: Path
    jobs: Jobs
    predictor: Predictor = field(default_factory=Predictor)
    watchers: dict[str, RunWatcher] = field(default_factory=dict)
    form: dict[str, Any] = field(default_factory=dict)  # FormValues field name -> its Gradio component

    def form_inputs(self) -> list:
        return [self.form[name] for name in FormValues.names()]

    def watcher(self, name: str) -> RunWatcher:
        run_dir = self.runs_dir.resolve() / name
        if name not in self.watchers or self.watchers[name].run_dir != run_dir:
            self.watchers[name] = RunWatcher(run_dir)
        return self.watchers[name]


def _gradio():
    # No usage analytics and no version check: the UI runs offline and tells no one it started.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from lftrain.extras import need

    return need("gradio", "lft ui")


def build_app(runs_dir: str | Path = "runs"):
    """The Gradio Blocks app (not started): Data, Model & recipe, Train, Report, Try it, Compare."""
    gr = _gradio()
    from lftrain.ui import tabs_run, tabs_setup

    runs = Path(runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    ctx = Context(runs_dir=runs, jobs=Jobs(runs))
    with gr.Blocks(analytics_enabled=False, title="lftrain") as app:
        gr.Markdown(f"# lftrain\nFine-tune a pre-trained model on your data, page by page. Runs are written to "
                    f"`{runs.resolve()}`; each page's settings become a normal recipe (`lft train` reads it too).")
        with gr.Tabs():
            tabs_setup.data_tab(gr, ctx)
            tabs_setup.model_tab(gr, ctx)
            tabs_run.train_tab(gr, ctx)
            tabs_run.report_tab(gr, ctx)
            tabs_run.try_tab(gr, ctx)
            tabs_run.compare_tab(gr, ctx)
        tabs_setup.wire_form(gr, ctx)
    app.lft_context = ctx
    return app


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def launch(host: str = "127.0.0.1", port: int = 7860, runs_dir: str | Path = "runs", *, block: bool = True):
    """Start the UI on http://HOST:PORT; with `block=False` return the app (close it with `app.close()`)."""
    app = build_app(runs_dir)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own requests to itself: not worth a line
    app.launch(server_name=host, server_port=port, prevent_thread_lock=True, ssr_mode=False, share=False,
               quiet=True, mcp_server=False, allowed_paths=[str(Path(runs_dir).resolve())])
    log.info("lft ui: http://%s:%d (runs in %s)", host, port, Path(runs_dir).resolve())
    if block:
        signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the UI as Ctrl-C does: its trainings checkpoint
        try:
            app.block_thread()
        finally:
            app.lft_context.jobs.stop_all()  # SIGTERM: each run checkpoints and resumes on the next Start
    return app
