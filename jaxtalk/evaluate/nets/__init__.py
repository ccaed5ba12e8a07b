"""Flax versions of the networks the evaluation metrics are defined with."""
