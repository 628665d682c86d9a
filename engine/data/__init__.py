"""Datasets: import (BundleRec folders, JSON Lines), fetch, demo data; sessions as typed objects."""
