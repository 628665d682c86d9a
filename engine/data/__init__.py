"""Datasets: import (BundleRec folders, JSON Lines), fetch, demo data; sessions as typed objects; leak.py:
whether a dataset's categories give the answer away (and so which item fields it defaults to)."""
