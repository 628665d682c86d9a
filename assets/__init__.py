"""Data files shipped with kdbundle: demo dataset, prompt templates, experiment grids."""
