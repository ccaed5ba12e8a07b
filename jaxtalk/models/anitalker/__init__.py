"""AniTalker family (X-LANCE/AniTalker): `stage1` (AniTalkerMotion: LIA + HAL +
identity/motion decoupling, the video-driven generator) and `stage2` (DiffusionPredictor:
the speech-to-motion Conformer diffusion denoiser with its variance adapter).
Checkpoint mappings: jaxtalk/convert/lia.py (stage 1), jaxtalk/convert/anitalker.py (stage 2)."""
