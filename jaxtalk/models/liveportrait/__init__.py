"""LivePortrait family (KwaiVGI/LivePortrait), Flax, NHWC images in [0, 1]:
`motion_extractor` (M, ConvNeXt-V2-tiny: canonical keypoints, pose bins, translation,
expression, scale), `generator` (G, the SPADE decoder), `retargeting` (the stitching,
lip and eye MLPs), `keypoints` (pose, keypoint transform, relative motion, stitching and
retargeting as the release's inference applies them).
Checkpoint mapping: jaxtalk/convert/liveportrait.py."""
