"""The top of a training run: a recipe into runs (stages), each run in named phases (inputs, session, model,
optimiser, fit, finish) around the one `fit()` of training/loop.py, launched in one process or through torchrun."""
