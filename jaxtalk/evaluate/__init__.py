"""Evaluation metrics: the papers' tables (PSNR, SSIM, L1, LPIPS, CSIM, LSE-D/C, FID, AED/APD).

- `image_metrics`: psnr / l1 / ssim, pure jitted functions over NHWC batches -> (N,).
- `lpips`, `csim`, `fid`, `sync`, `pose_expression`: the network-based metrics; their nets
  live in `jaxtalk.models.metric_nets` and their PyTorch importers in `jaxtalk.convert`.
- `metric`: the `Metric` protocol (update(batch) / compute() / reset()) and implementations.
- `registry`: metrics and weight releases by name (`create`, `create_many`,
  `import_release`), with `MissingWeightsError` naming the `jaxtalk import` command.
- `weights`: the on-disk format of imported metric weights (safetensors).
"""
