"""Finished runs: loaded for prediction and chat, exported, compared with each other, their base model or a prompted
language model, and run as benchmark suites. Everything here starts from a run directory that training wrote."""
