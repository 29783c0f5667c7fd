"""The Train, Report, Try it and Compare pages."""

from __future__ import annotations

from lftrain.errors import LftError
from lftrain.ui import forms
from lftrain.ui import runs as run_logic
from lftrain.ui.forms import FormValues
from lftrain.ui.jobs import log_tail
from lftrain.ui.progress import loss_points, progress_markdown
from lftrain.ui.tabs_setup import errors_markdown

CHOOSE = "choose a run"


def start_training(ctx, *values) -> str:
    """Validate the form, write RUNS/NAME.yaml and start `lft train` on it; the message to show."""
    form = FormValues(*values)
    recipe, errors = forms.prepare(form, ctx.runs_dir)
    if errors:
        return errors_markdown(errors)
    path = forms.write_recipe(recipe, ctx.runs_dir)
    job = ctx.jobs.start(recipe["name"], path)
    return (f"**Training started** (`lft train {path}`, log: `{job.log}`). The same command in a terminal "
            f"resumes it if it is stopped.")


def training_view(gr, ctx, name: str, shown: tuple | None):
    """(progress Markdown, loss curve, log tail, what is shown) of run NAME, from its files. The curve and the log
    are sent only when they changed (`shown`: the last ones sent), so the plot is not redrawn every second."""
    import pandas as pd

    name = (name or "").strip()
    if not name:
        return "", gr.skip(), gr.skip(), shown
    job = ctx.jobs.get(name)
    p = ctx.watcher(name).poll()
    log = log_tail(ctx.jobs.log_path(name))
    now = (name, len(p.losses), p.losses[-1] if p.losses else None, hash(log))
    old = tuple(shown) if shown else (None, None, None, None)
    curve = pd.DataFrame(loss_points(p)) if now[:3] != old[:3] else gr.skip()
    return (progress_markdown(p, job.state() if job else None), curve, log if now[3] != old[3] else gr.skip(),
            list(now))


def train_tab(gr, ctx) -> None:
    with gr.Tab("3. Train", id="train"):
        gr.Markdown("Start training the run named on *Model & recipe*. It runs as `lft train RUNS/NAME.yaml` in "
                    "its own process: this page follows its metrics.jsonl. Stop writes a checkpoint; "
                    "Start again resumes from it.")
        with gr.Row():
            start = gr.Button("Start training", variant="primary")
            stop = gr.Button("Stop")
        message = gr.Markdown(elem_id="train-message")
        status = gr.Markdown(elem_id="train-status")
        plot = gr.LinePlot(x="step", y="loss", title="training loss", label="loss", elem_id="lft-loss-plot")
        logs = gr.Textbox(label="log (last lines)", lines=12, max_lines=12, autoscroll=True)
        timer = gr.Timer(1.0)
        shown = gr.State(None)
    start.click(lambda *v: start_training(ctx, *v), ctx.form_inputs(), message)
    stop.click(lambda n: _stop(ctx, n), ctx.form["run_name"], message)
    timer.tick(lambda n, sh: training_view(gr, ctx, n, sh), [ctx.form["run_name"], shown], [status, plot, logs, shown],
               show_progress="hidden")


def _stop(ctx, name: str) -> str:
    job = ctx.jobs.get((name or "").strip())
    if job is None or not job.running:
        return "Nothing to stop: this page has not started that run, or it has ended."
    job.stop()
    return "Stopping: a checkpoint is written first; Start resumes from it."


def _run_choices(gr, ctx, value=None, index: int = 0):
    """The finished runs as dropdown choices, keeping the chosen one (else the index-th newest)."""
    runs = run_logic.list_runs(ctx.runs_dir, finished=True)
    fallback = runs[min(index, len(runs) - 1)] if runs else None
    return gr.Dropdown(choices=runs, value=value if value in runs else fallback)


def report_tab(gr, ctx) -> None:
    with gr.Tab("4. Report", id="report") as tab:
        gr.Markdown("A finished run's test metrics and its report.html (calibration, intervals, per-class "
                    "scores, the data card).")
        with gr.Row():
            run = gr.Dropdown([], label="Run", scale=4)
            refresh = gr.Button("Refresh", scale=1)
        metrics = gr.Dataframe(headers=["split", "metric", "value"], label="Results", interactive=False,
                               elem_id="lft-results")
        page = gr.HTML()
    for event in (tab.select, refresh.click):
        event(lambda r: _run_choices(gr, ctx, value=r), run, run).then(show_report, run, [metrics, page])
    run.input(show_report, run, [metrics, page])


def show_report(run: str | None):
    """(results table, embedded report) of the chosen run."""
    return (run_logic.metrics_rows(run) if run else None, run_logic.report_html(run) if run else "")


def predict_view(ctx, run: str, text: str, pair: str):
    """(label confidences or None, the full prediction) for one typed text."""
    if not run:
        return None, {"error": "choose a finished run"}
    try:
        if run_logic.is_generative(run):
            return None, run_logic.generate(run, text)
        pred = ctx.predictor.predict(run, text, pair)
    except LftError as exc:
        return None, {"error": str(exc)}
    return pred.get("probs"), pred


def try_tab(gr, ctx) -> None:
    with gr.Tab("5. Try it", id="try") as tab:
        gr.Markdown("Type a text and see what a trained run predicts (with the calibrated probabilities "
                    "`lft predict` gives).")
        run = gr.Dropdown([], label="Run")
        text = gr.Textbox(label="Text", lines=3, elem_id="lft-try-text")
        pair = gr.Textbox(label="Second text", visible=False)
        go = gr.Button("Predict", variant="primary")
        label = gr.Label(label="Prediction", num_top_classes=5)
        raw = gr.JSON(label="As `lft predict` writes it")
    tab.select(lambda r: _run_choices(gr, ctx, value=r), run, run)
    run.change(lambda r: gr.Textbox(visible=bool(run_logic.text_pair_column(r)),
                                    label=f"Second text ({run_logic.text_pair_column(r)})"), run, pair)
    go.click(lambda r, t, p: predict_view(ctx, r, t, p), [run, text, pair], [label, raw])
    text.submit(lambda r, t, p: predict_view(ctx, r, t, p), [run, text, pair], [label, raw])


def compare_tab(gr, ctx) -> None:
    with gr.Tab("6. Compare", id="compare") as tab:
        gr.Markdown("Run B against run A on the same test predictions: paired bootstrap intervals of each "
                    "metric's difference and a verdict (`lft compare`). Or one run against a linear probe on "
                    "its frozen base model.")
        with gr.Row():
            a = gr.Dropdown([], label="Run A")
            b = gr.Dropdown([], label="Run B")
            base = gr.Checkbox(label="Compare run A against its base model instead", elem_id="lft-base")
        go = gr.Button("Compare", variant="primary")
        table = gr.Dataframe(headers=["metric", "A", "B", "B - A", "interval", "verdict"], interactive=False,
                             elem_id="lft-compare-table")
        text = gr.Textbox(label="lft compare", lines=12, elem_id="lft-compare-text")
    tab.select(lambda x, y: (_run_choices(gr, ctx, value=x), _run_choices(gr, ctx, value=y, index=1)), [a, b], [a, b])
    go.click(lambda x, y, z: _compare(x, y, z), [a, b, base], [table, text])


def _compare(a, b, base):
    if not a:
        return None, "choose run A"
    rows, text = run_logic.compare(a, b, base=base)
    return rows or None, text
