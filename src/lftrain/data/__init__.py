"""Data sources, row validation, splits, cached tokenisation and batching."""
