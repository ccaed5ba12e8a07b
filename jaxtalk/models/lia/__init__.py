"""LIA family (wyhsirius/LIA): `generator` (LIAGenerator: encoder, motion directions,
flow-warping StyleGAN2 synthesis; the WarpingGenerator base AniTalker stage 1 builds on) and
`discriminator` (the StyleGAN2 discriminator LIA and AniTalker stage 1 train with).
Checkpoint mapping: jaxtalk/convert/lia.py."""
