"""AniPortrait family (Zejun-Yang/AniPortrait), Flax, NHWC: `pose_guider` (the landmark
PoseGuider whose features the denoising UNet adds after conv_in and each down block). The
UNets, motion modules, VAE and CLIP image encoder are the latent_diffusion family's.
Checkpoint mapping: jaxtalk/convert/aniportrait.py."""
