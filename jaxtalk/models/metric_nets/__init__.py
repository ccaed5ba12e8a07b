"""Flax versions of the networks the evaluation metrics (jaxtalk/evaluate) are defined with;
their layers come from jaxtalk/models/layers/torch_nn.py, their PyTorch importers and layout
rules live in jaxtalk/convert."""
