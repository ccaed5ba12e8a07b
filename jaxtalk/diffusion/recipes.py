"""The train and inference diffusion settings each latent video diffusion release pairs.

The releases train on one process and sample over another: both AniPortrait and MegActor
train on SD's scaled-linear betas rescaled to zero terminal SNR, while their inference
configs build a `DDIMScheduler` over *linear* 0.00085-0.012 betas. The records below are
what the paper configs carry (`dataclasses.asdict` gives a plain dict for ml_collections;
`release_diffusion(name)` rebuilds them); every value is cited from the release.
"""

from __future__ import annotations

import dataclasses

from jaxtalk.diffusion.context import ContextWindows
from jaxtalk.diffusion.objectives import TrainObjective
from jaxtalk.diffusion.samplers import DDIMConfig
from jaxtalk.diffusion.schedules import NoiseProcess


@dataclasses.dataclass(frozen=True)
class ReleaseDiffusion:
    """A release's diffusion recipe: the training objective, the timestep spacing of the
    scheduler its training script builds (used by its validation sampling), the inference
    DDIM scheduler, the guidance scale and the context windows of its long-video pipeline."""

    train: TrainObjective
    train_spacing: str
    sample: DDIMConfig
    guidance_scale: float
    context: ContextWindows


def aniportrait() -> ReleaseDiffusion:
    """AniPortrait (Zejun-Yang/AniPortrait).

    Training (train_stage_{1,2}.py with enable_zero_snr): DDIMScheduler(scaled_linear
    0.00085-0.012, rescale_betas_zero_snr, trailing, v_prediction), offset noise 0.05,
    snr_gamma 5, uncond_ratio 0.1 (configs/train/stage{1,2}.yaml). Inference
    (configs/inference/inference_v2.yaml, scripts/*2vid.py): DDIMScheduler(linear
    0.00085-0.012, clip_sample False, steps_offset 1, v_prediction, rescale_betas_zero_snr,
    trailing), 25 steps, eta 0, cfg 3.5; pipeline_pose2vid_long: uniform windows of 16
    frames, stride 1, overlap 4, closed loop, step 0.
    """
    return ReleaseDiffusion(
        train=TrainObjective(
            process=NoiseProcess("scaled_linear", 0.00085, 0.012, 1000, zero_terminal_snr=True),
            prediction="v",
            noise_offset=0.05,
            snr_gamma=5.0,
            uncond_ratio=0.1,
        ),
        train_spacing="trailing",
        sample=DDIMConfig(
            process=NoiseProcess("linear", 0.00085, 0.012, 1000, zero_terminal_snr=True),
            prediction="v",
            timestep_spacing="trailing",
            steps_offset=1,
            clip_sample=False,
            num_steps=25,
        ),
        guidance_scale=3.5,
        context=ContextWindows(size=16, overlap=4, stride=1, closed_loop=True),
    )


def megactor() -> ReleaseDiffusion:
    """MegActor v1 (megvii-research/megactor before MegActor-Sigma, commit 16e7cdf).

    Training (configs/train/train_stage{1,2}.yaml, animate.py): DDIMScheduler(scaled_linear
    0.00085-0.012, steps_offset 1, clip_sample False, rescale_betas_zero_snr), epsilon (the
    default), offset noise 0.1, plain MSE, no condition dropout. Inference
    (configs/inference/magic_inference.yaml gives only the betas, so diffusers' defaults
    hold: clip_sample True, leading spacing, steps_offset 0, epsilon, no rescale;
    configs/inference/inference.yaml): 25 steps, cfg 4.5, windows of 16 frames, stride 1,
    overlap 8, closed loop.
    """
    return ReleaseDiffusion(
        train=TrainObjective(
            process=NoiseProcess("scaled_linear", 0.00085, 0.012, 1000, zero_terminal_snr=True),
            prediction="eps",
            noise_offset=0.1,
            snr_gamma=0.0,
            uncond_ratio=0.0,
        ),
        train_spacing="leading",
        sample=DDIMConfig(
            process=NoiseProcess("linear", 0.00085, 0.012, 1000, zero_terminal_snr=False),
            prediction="eps",
            timestep_spacing="leading",
            steps_offset=0,
            clip_sample=True,
            num_steps=25,
        ),
        guidance_scale=4.5,
        context=ContextWindows(size=16, overlap=8, stride=1, closed_loop=True),
    )


RELEASES = {"aniportrait": aniportrait, "megactor": megactor}


def release_diffusion(name: str) -> ReleaseDiffusion:
    if name not in RELEASES:
        raise ValueError(f"unknown release {name!r}; choose one of {sorted(RELEASES)}")
    return RELEASES[name]()


def to_dict(recipe: ReleaseDiffusion) -> dict:
    """Plain nested dict (for an ml_collections config)."""
    return dataclasses.asdict(recipe)


def from_dict(values: dict) -> ReleaseDiffusion:
    """Inverse of `to_dict` (values overridden from the command line come back typed)."""
    train = dict(values["train"])
    train["process"] = NoiseProcess(**train["process"])
    sample = dict(values["sample"])
    sample["process"] = NoiseProcess(**sample["process"])
    return ReleaseDiffusion(
        train=TrainObjective(**train),
        train_spacing=values["train_spacing"],
        sample=DDIMConfig(**sample),
        guidance_scale=float(values["guidance_scale"]),
        context=ContextWindows(**values["context"]),
    )


def of_run(diffusion) -> tuple[ReleaseDiffusion, DDIMConfig]:
    """A run's `diffusion` config (`recipe`, `sample_steps`, `sample_train_betas`) -> its
    recipe and the DDIM sampler its evaluation and animation use: the recipe's, with
    `sample_steps` steps, over the training betas when `sample_train_betas` (tiny runs: a
    model trained for minutes does not survive the release's linear inference betas)."""
    values = diffusion.to_dict() if hasattr(diffusion, "to_dict") else dict(diffusion)
    recipe = from_dict(values["recipe"])
    ddim = recipe.sample
    if values.get("sample_train_betas"):
        ddim = dataclasses.replace(ddim, process=recipe.train.process)
    return recipe, dataclasses.replace(ddim, num_steps=int(values["sample_steps"]))
