"""`lft ui`: a web UI (Gradio) for people who do not write YAML. Pages: Data, Model & recipe, Train, Report,
Try it, Compare. It writes a normal recipe (RUNS/NAME.yaml) and trains it with `lft train` in a subprocess, so
every run it starts is an ordinary run directory. See docs/ui.md."""
