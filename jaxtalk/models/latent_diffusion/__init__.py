"""Latent video diffusion family on Stable Diffusion 1.5 (AniPortrait, MegActor), Flax, NHWC
with frames folded into the batch for 2-D layers: the SD UNet (2-D, and inflated over frames
with AnimateDiff motion modules), reference attention, the VAE, the CLIP image encoder.
Schedules and samplers live in jaxtalk/diffusion."""
