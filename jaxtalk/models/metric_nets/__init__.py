"""Flax versions of the networks the evaluation metrics (jaxtalk/evaluate) are defined with;
their PyTorch importers and layout rules (torch_rules) live in jaxtalk/convert."""
