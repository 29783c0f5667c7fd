"""Metrics, inference in input order, and printed tables."""
