"""The Data and Model & recipe pages."""

from __future__ import annotations

from lftrain.ui import data as data_logic
from lftrain.ui import forms
from lftrain.ui.forms import HELP, FormValues


def data_tab(gr, ctx) -> None:
    f = ctx.form
    with gr.Tab("1. Data", id="data"):
        gr.Markdown("Choose the labelled data to train on: a path on this machine, or upload a file. "
                    "CSV/TSV need a header row; JSON lines one object per line.")
        with gr.Row():
            f["data_file"] = gr.Textbox(label="Training data file", info=HELP["data_file"], scale=3)
            upload = gr.File(label="…or upload a CSV / JSONL file", file_types=[".csv", ".tsv", ".jsonl", ".json",
                             ".parquet", ".gz"], type="filepath", scale=2)
        with gr.Row():
            f["eval_file"] = gr.Textbox(label="Evaluation file (optional)", info=HELP["eval_file"])
            f["test_file"] = gr.Textbox(label="Test file (optional)", info=HELP["test_file"])
        load = gr.Button("Show the data")
        summary = gr.Markdown()
        table = gr.Dataframe(label="First rows", interactive=False)
        check = gr.Button("Check the data", variant="primary")
        check_msg = gr.Markdown()
        checks = gr.Dataframe(headers=data_logic.CHECK_COLUMNS, label="Data checks (as `lft data check` runs them)",
                              interactive=False, wrap=True)
    ctx.data_widgets = {"upload": upload, "load": load, "summary": summary, "table": table, "check": check,
                        "check_msg": check_msg, "checks": checks}


def model_tab(gr, ctx) -> None:
    f = ctx.form
    with gr.Tab("2. Model & recipe", id="model"):
        gr.Markdown("Choose the model to start from and how to train it. Fields you leave alone keep the "
                    "template's value; `Preview recipe` shows the YAML that will be written and checks it.")
        with gr.Row():
            f["run_name"] = gr.Textbox(value="my-run", label="Run name", info=HELP["run_name"])
            f["template"] = gr.Dropdown(list(forms.templates()), value=forms.BUILTIN, label="Recipe template",
                                        info=HELP["template"])
        f["model"] = gr.Textbox(label="Model", info=HELP["model"], placeholder="./models/minilm or org/name")
        with gr.Row():
            f["task_type"] = gr.Dropdown(list(forms.TASK_TYPES), value=forms.FormValues.task_type, label="Task type",
                                         info=HELP["task_type"])
            f["text"] = gr.Dropdown(["text"], value="text", label="Text column", info=HELP["text"],
                                    allow_custom_value=True)
            f["label"] = gr.Dropdown(["label"], value="label", label="Label column", info=HELP["label"],
                                     allow_custom_value=True)
        with gr.Row():
            f["adaptation"] = gr.Radio(list(forms.ADAPTATIONS), value=forms.FormValues.adaptation, label="Adaptation",
                                       info=HELP["adaptation"])
            f["freeze_layers"] = gr.Number(4, precision=0, label="Frozen bottom layers", info=HELP["freeze_layers"])
            f["lora_r"] = gr.Number(8, precision=0, label="LoRA rank", info=HELP["lora_r"])
        with gr.Row():
            f["epochs"] = gr.Number(3, label="Epochs", info=HELP["epochs"])
            f["lr"] = gr.Number(5e-5, label="Learning rate", info=HELP["lr"])
            f["batch_size"] = gr.Number(32, precision=0, label="Batch size", info=HELP["batch_size"])
            f["max_length"] = gr.Number(128, precision=0, label="Max length (tokens)", info=HELP["max_length"])
        preview = gr.Button("Preview recipe")
        errors = gr.Markdown(elem_id="recipe-errors")
        yaml_box = gr.Code(language="yaml", label="recipe.yaml", interactive=False)
    ctx.model_widgets = {"preview": preview, "errors": errors, "yaml": yaml_box}


def errors_markdown(errors: list[str]) -> str:
    """Validation errors as the page shows them (the schema's message keeps its key and suggestion)."""
    if not errors:
        return "**The recipe is valid.**"
    return "**The recipe is not valid yet:**\n\n" + "\n\n".join(f"```\n{e}\n```" for e in errors)


def preview_recipe(ctx, *values):
    recipe, errors = forms.prepare(FormValues(*values), ctx.runs_dir)
    return errors_markdown(errors), forms.recipe_yaml(recipe) if recipe else ""


def _show_data(gr, path: str):
    columns, head, message = data_logic.preview(path)
    text, label = data_logic.guess_columns(columns)
    if columns:
        message += f"  \nText column: **{text}**, label column: **{label}** (change them on *Model & recipe*)."
    table = gr.Dataframe(value=head, headers=columns) if columns else gr.Dataframe(value=None)
    col_update = (gr.Dropdown(choices=columns, value=text), gr.Dropdown(choices=columns, value=label)) if columns \
        else (gr.Dropdown(), gr.Dropdown())
    return message, table, *col_update


def wire_form(gr, ctx) -> None:
    """The events of the Data and Model & recipe pages (after every form component exists)."""
    f, d, m = ctx.form, ctx.data_widgets, ctx.model_widgets
    for name, component in f.items():  # stable handles for scripts and the browser test: #lft-FIELD
        component.elem_id = f"lft-{name}"
    shown = [d["summary"], d["table"], f["text"], f["label"]]
    d["upload"].upload(lambda p: str(data_logic.save_upload(p, ctx.runs_dir)) if p else "", d["upload"],
                       f["data_file"]).then(lambda p: _show_data(gr, p), f["data_file"], shown)
    d["load"].click(lambda p: _show_data(gr, p), f["data_file"], shown)
    f["data_file"].submit(lambda p: _show_data(gr, p), f["data_file"], shown)
    d["check"].click(lambda *v: _check(ctx, *v), ctx.form_inputs(), [d["checks"], d["check_msg"]])
    m["preview"].click(lambda *v: preview_recipe(ctx, *v), ctx.form_inputs(), [m["errors"], m["yaml"]])
    filled = [f[n] for n in FormValues.names()]
    f["template"].input(lambda *v: list(vars(forms.form_from_template(v[FormValues.names().index("template")],
                                                                       FormValues(*v))).values()),
                        ctx.form_inputs(), filled)


def _check(ctx, *values):
    rows, message = data_logic.run_data_check(FormValues(*values), ctx.runs_dir)
    return rows or None, message
