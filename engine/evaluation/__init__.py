"""Scoring: metrics (the one table of metrics), baselines, evaluate, difficulty, grids and reports."""
