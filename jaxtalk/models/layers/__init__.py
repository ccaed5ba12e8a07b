"""Shared blocks, written once: `torch_nn` (PyTorch-semantics Linear/Conv/Norm/MaxPool
constructors and inits), `equalized` and `modulated` (StyleGAN2 equalized-lr and modulated
convs), `upfirdn` (blur/resample), `grid_sample`, `conformer` (ESPnet Conformer), `lstm`."""
