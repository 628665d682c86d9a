"""Scoring: metrics (the one table of metrics), baselines (similarity.py: the titles-only ones), evaluate,
difficulty, grids and reports."""
