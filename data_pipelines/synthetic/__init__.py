"""Procedural talking heads: the embedded default dataset (see `generate.py`)."""
