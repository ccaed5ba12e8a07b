"""LivePortrait family (KwaiVGI/LivePortrait), Flax, NHWC images in [0, 1]:
`appearance` (F, the 3-D appearance feature volume), `motion_extractor` (M,
ConvNeXt-V2-tiny: canonical keypoints, pose bins, translation, expression, scale),
`warping` (W with its dense motion network), `generator` (G, the SPADE decoder),
`retargeting` (the stitching, lip and eye MLPs), `blocks` (the 2-D/3-D conv blocks and
hourglass F and W share) and `keypoints` (pose, keypoint transform, relative motion,
stitching and retargeting as the release's inference applies them).
Checkpoint mapping: jaxtalk/convert/liveportrait.py."""
