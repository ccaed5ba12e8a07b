"""MegActor (megvii-research/megactor v1): raw-video-driven portrait animation on the latent
video diffusion family. `denoiser.MegActor` composes the 13-channel inflated UNet with
AnimateDiff v3 motion modules, the DrivenEncoder (`driven_encoder`) and the ReferenceNet."""

from jaxtalk.models.megactor.denoiser import MEGACTOR, TINY, MegActor, MegActorConfig
from jaxtalk.models.megactor.driven_encoder import DrivenEncoder, DrivenEncoderConfig

__all__ = ["MEGACTOR", "TINY", "DrivenEncoder", "DrivenEncoderConfig", "MegActor", "MegActorConfig"]
