"""Hyperparameter search over any recipe field (Optuna), calling the public `lftrain.api.train` per trial.

config.py  the recipe's `tune:` section (no Optuna import: `lft --help` and recipe validation stay fast)
space.py   search spaces: sampling a trial's values, checking them against the recipe, override strings
study.py   storage (SQLite / PostgreSQL), sampler, pruner, the trial budget, recovery of trials whose worker died
trial.py   one trial = one ordinary run directory, with pruning from its intermediate evaluations
search.py  `tune()`: the study directory and the search loop
report.py  best.yaml, trials.csv, optimisation history, importances, parallel coordinates, report.html
"""
