"""AniTalker stage 2: speech -> stage-1 motion codes with a Conformer diffusion denoiser.

Groups:
- `model`: the DiffusionPredictor (trained; its BatchNorm stats are model_state
  {"batch_stats": {"model": ...}}).
- `stage1`: {"model": AniTalkerMotion} from a stage-1 run or weights file, frozen (no
  optimizer). It encodes the window frames into targets on the fly, so any prepared window
  set trains stage 2 without a preprocessing pass, and renders the samples.
- `hubert` (hubert_* variants): HuBERT-large (or base) from `jaxtalk import --release=hubert`,
  frozen, run on the window audio on the fly; all hidden states feed the learned layer mix.
  The mfcc_* variants compute the 39-d MFCCs on the host, in the data iterator.
- `motion_stats` (with `diffusion.normalize_motion`): per-dimension mean and std of the
  stage-1 codes, measured once on training windows when the run starts, frozen, saved with
  the checkpoints (inference reads them back).

A window from the loader has num_frames = 1 + T frames. Frame 0 is the hint frame at
start-1: its start code h (512) and motion code alpha (20) are the conditioning
`motion_start` / `direction_start` (the source portrait's at inference). Frames 1..T are the
targets: x0 = alpha / motion_scale (released), or ((alpha - mean) / std) / motion_scale with
`normalize_motion`, with the audio under those T frames. The release clamps x0 to +-1 while
sampling, which fits its trained stage 1's codes; a freshly trained small stage 1 has codes
with offsets of several units in some dimensions, which that clamp would cut (and a wide
clamp lets sampling noise through), hence the per-dimension normalisation.

Loss = eps-MSE (DDPM, uniform t) + lambda * sum over the variant's attributes of the masked
MSE between the variance adapter's predictions and the labels:
  pose      (yaw, pitch, roll) in degrees / 90, as the release;
  location  x of the nose tip / image width (the release: x of 68-point landmark 30 / 512);
            from the 5-point `landmarks_xy` (point 2 = nose);
  scale     ours (the release does not publish its definition): the mean distance of the
            5 landmarks from their centroid, in image widths.
A label a clip lacks (`<name>_valid` False) drops out of its term.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk import fs
from jaxtalk.diffusion import objectives, samplers, schedules
from jaxtalk.models.anitalker.stage1 import AniTalkerMotion
from jaxtalk.models.anitalker.stage2 import (
    SAMPLES_PER_FRAME,
    DiffusionPredictor,
    from_diffusion,
    hubert_config,
    hubert_states,
    init_inputs,
    predictor_from_config,
    stage1_from_config,
    to_diffusion,
)
from jaxtalk.models.audio import hubert as hubert_lib
from jaxtalk.models.audio import mfcc as mfcc_lib
from jaxtalk.train.task import LossOutput, Task


# ---------------------------------------------------------------------------- models
def stage1_source(stage1_cfg) -> dict:
    """Where the frozen stage 1 comes from, fixed: {"workdir", "step"} (the run's latest
    step when config.stage1.step is -1) or {"weights"}, paths absolute."""
    if stage1_cfg["workdir"]:
        from jaxtalk.train import checkpoints

        workdir = fs.absolute(stage1_cfg["workdir"])
        step = stage1_cfg.get("step", -1)
        if step in (None, -1):  # the newest readable step (a damaged newer one is reported)
            if not checkpoints.saved_steps(workdir):
                raise ValueError(f"config.stage1.workdir={workdir}: no checkpoints")
            step = checkpoints.resolve_step(workdir)
        return {"workdir": workdir, "step": int(step)}
    if stage1_cfg["weights"]:
        return {"weights": fs.absolute(stage1_cfg["weights"])}
    raise ValueError(
        "stage 2 needs a stage-1 model for its targets: set "
        "--config.stage1.workdir=RUN (an anitalker_stage1 run) or "
        "--config.stage1.weights=FILE (jaxtalk import --release=anitalker_stage1)"
    )


def load_stage1_params(source: dict):
    """AniTalkerMotion params from a `stage1_source` record: a run's EMA generator or a
    weights file."""
    if "workdir" in source:
        from jaxtalk.train import checkpoints

        return checkpoints.group_variables(source["workdir"], "generator", source["step"])[
            "params"
        ]["model"]
    from jaxtalk.convert import weights

    return weights.load(source["weights"])["params"]


# ---------------------------------------------------------------------------- motion codes
def code_statistics(codes, min_std: float = 1e-3) -> dict:
    """{'mean', 'std'} per dimension of (..., D) codes, std floored so no axis blows up."""
    flat = np.asarray(codes, np.float64).reshape(-1, np.shape(codes)[-1])
    return {
        "mean": flat.mean(0).astype(np.float32),
        "std": np.maximum(flat.std(0), min_std).astype(np.float32),
    }


# ---------------------------------------------------------------------------- audio features
def window_mfcc(audio: np.ndarray, num_frames: int, pad_frames: int) -> np.ndarray:
    """(4 * num_frames, 39) MFCCs of the frames after the hint frame of a loader window.

    The whole padded window is featurised (so the deltas see context) and the 100 Hz frames
    of video frames 1..num_frames are kept: 4 per video frame, as the release aligns them.
    """
    feats = mfcc_lib.anitalker_mfcc(np.asarray(audio, np.float32))
    first = mfcc_lib.FEATURES_PER_VIDEO_FRAME * (pad_frames + 1)
    out = feats[first : first + mfcc_lib.FEATURES_PER_VIDEO_FRAME * num_frames]
    if len(out) != mfcc_lib.FEATURES_PER_VIDEO_FRAME * num_frames:
        raise ValueError(f"audio of {len(audio)} samples is too short for {num_frames} frames")
    return out


class MfccBatches:
    """Adds `mfcc` (B, 4T, 39) to each loader batch and drops the raw audio; checkpointable
    like the grain iterator it wraps."""

    def __init__(self, it, num_frames: int, pad_frames: int):
        self._it, self._frames, self._pad = it, num_frames, pad_frames

    def __iter__(self):
        return self

    def __next__(self):
        batch = dict(next(self._it))
        audio = batch.pop("audio")
        batch["mfcc"] = np.stack([window_mfcc(a, self._frames, self._pad) for a in audio])
        return batch

    def get_state(self):
        return self._it.get_state()

    def set_state(self, state):
        self._it.set_state(state)


# ---------------------------------------------------------------------------- labels
def attribute_labels(batch) -> dict:
    """(values (B, T, k), valid (B,)) per variance-adapter attribute, for frames 1..T."""
    labels = {}
    if "pose" in batch:
        labels["pose"] = (batch["pose"][:, 1:] / 90.0, batch["pose_valid"])
    if "landmarks_xy" in batch:
        points = batch["landmarks_xy"][:, 1:].reshape(batch["landmarks_xy"].shape[:1] + (-1, 5, 2))
        centre = points.mean(-2, keepdims=True)
        valid = batch["landmarks_xy_valid"]
        labels["location"] = (points[..., 2, :1], valid)
        labels["scale"] = (jnp.linalg.norm(points - centre, axis=-1).mean(-1, keepdims=True), valid)
    return labels


def masked_mse(pred, target, valid):
    per_example = objectives.mean_flat(jnp.square(pred.astype(jnp.float32) - target))
    w = valid.astype(jnp.float32)
    return jnp.sum(per_example * w) / jnp.maximum(jnp.sum(w), 1.0)


# ---------------------------------------------------------------------------- task
class AniTalkerStage2Task(Task):
    PIXEL_KEYS = ("frames",)
    EVAL_MODES = ()  # no eval_outputs yet: lip sync is measured by jaxtalk/evaluate/lipsync_probe.py

    def __init__(self, config):
        self.config = config
        dtype = jnp.dtype(config.dtype)
        self.model = predictor_from_config(config.model, config.stage1, dtype)
        self.stage1 = stage1_from_config(config.stage1)
        self.hubert = (
            hubert_lib.HubertModel(hubert_config(config.hubert.size), dtype=dtype)
            if self.model.audio_kind == "hubert"
            else None
        )
        d = config.diffusion
        self.schedule = schedules.make_schedule(d.beta_schedule, d.num_timesteps)
        self.motion_scale = float(d.motion_scale)
        self.normalize_motion = bool(d.normalize_motion)
        self.clip_x0 = float(d.clip_x0) if d.clip_x0 > 0 else None
        if config.data.num_frames < 2:
            raise ValueError("config.data.num_frames must be >= 2 (hint frame + window)")
        if self.model.audio_kind == "mfcc" and config.data.audio_pad_frames < 1:
            raise ValueError("the mfcc variants need config.data.audio_pad_frames >= 1")

    @property
    def window(self) -> int:
        return self.config.data.num_frames - 1

    # ------------------------------------------------------------------ params
    def init(self, rng, batch):
        r_model, r_stage1, r_hubert = jax.random.split(rng, 3)
        b = batch["frames"].shape[0]
        inputs = init_inputs(self.model, b, self.window)
        variables = self.model.init(r_model, *inputs)
        s = self.config.stage1.size
        image = jnp.zeros((1, s, s, 3))
        # Through the full model: render() has parameters that encode() lacks.
        params = {
            "model": variables["params"],
            "stage1": {"model": self.stage1.init(r_stage1, image, image)["params"]},
        }
        if self.hubert is not None:
            params["hubert"] = self.hubert.init(r_hubert, jnp.zeros((1, 16000)))["params"]
        if self.normalize_motion:  # placeholders; pretrained() measures the real ones
            dims = self.config.stage1.motion_dim
            params["motion_stats"] = {"mean": jnp.zeros((dims,)), "std": jnp.ones((dims,))}
        return params, {"batch_stats": {"model": variables["batch_stats"]}}

    def _stats(self, params):
        return params["motion_stats"] if self.normalize_motion else None

    def measure_motion_stats(self, stage1_params, windows: int) -> dict:
        """code_statistics of the frozen stage 1's codes on `windows` training windows."""
        encode = jax.jit(lambda p, b: self.encode_window(p, b)[2])
        it = self.data(
            "train",
            global_batch_size=self.config.batch_size,
            seed=self.config.seed,
            process_index=0,
            process_count=1,
        )
        codes = [
            np.asarray(encode({"stage1": {"model": stage1_params}}, next(it)))
            for _ in range(max(1, -(-windows // self.config.batch_size)))
        ]
        return code_statistics(np.concatenate(codes))

    def frozen_sources(self):
        """`stage1` (and `hubert`) are rebuilt from their files / run, not checkpointed."""
        out = {"stage1": stage1_source(self.config.stage1)}
        if self.hubert is not None:
            from jaxtalk.convert import weights

            path = self.config.hubert.weights or str(weights.weights_path("hubert"))
            out["hubert"] = {"weights": fs.absolute(path)}
        return out

    def load_frozen(self, group, source):
        key = (group, tuple(sorted(source.items())))
        cache = self.__dict__.setdefault("_frozen_cache", {})
        if key not in cache:
            if group == "stage1":
                cache.clear()
                cache[key] = {"model": load_stage1_params(source)}
            elif group == "hubert":
                from jaxtalk.convert import weights

                if not fs.exists(source["weights"]):
                    raise ValueError(
                        f"the hubert variants need HuBERT weights at "
                        f"{source['weights']}: run `jaxtalk import --release=hubert "
                        "--checkpoint=...` or set --config.hubert.weights"
                    )
                return dict(weights.load(source["weights"])["params"])  # every top-level module
            else:
                return super().load_frozen(group, source)
        return cache[key]

    def pretrained(self):
        out = {}
        if self.normalize_motion:  # measured with the frozen stage 1 (loaded once, cached)
            stage1 = self.load_frozen("stage1", stage1_source(self.config.stage1))["model"]
            out["motion_stats"] = self.measure_motion_stats(
                stage1, self.config.diffusion.normalize_windows
            )
        if self.config.init_from:
            from jaxtalk.convert import weights

            out["model"] = dict(weights.load(self.config.init_from)["params"])
        return out

    # ------------------------------------------------------------------ conditioning
    def encode_window(self, params, batch):
        """Frozen stage 1 on the window: (motion_start (B, 512), direction_start (B, 20),
        motion codes (B, T, 20) of frames 1..T)."""
        frames = self.preprocess(batch)["frames"].astype(jnp.float32)
        b, n = frames.shape[:2]
        enc = self.stage1.apply(
            {"params": params["stage1"]["model"]},
            frames.reshape((b * n,) + frames.shape[2:]),
            method=AniTalkerMotion.encode,
        )
        h = jax.lax.stop_gradient(enc["h"]).reshape(b, n, -1)
        alpha = jax.lax.stop_gradient(enc["alpha"]).reshape(b, n, -1).astype(jnp.float32)
        return h[:, 0], alpha[:, 0], alpha[:, 1:]

    def audio_input(self, params, batch):
        """The denoiser's audio input for frames 1..T of the window."""
        if self.hubert is None:
            return batch["mfcc"]
        t, pad = self.window, self.config.data.audio_pad_frames
        first = SAMPLES_PER_FRAME * (pad + 1)
        wav = batch["audio"][:, first : first + SAMPLES_PER_FRAME * t]
        return jax.lax.stop_gradient(hubert_states(self.hubert, {"params": params["hubert"]}, wav))

    def _variables(self, params, model_state):
        return {"params": params["model"], "batch_stats": model_state["batch_stats"]["model"]}

    # ------------------------------------------------------------------ losses
    def losses(self):
        return [("model", self._loss)]

    def _loss(self, params, model_state, batch, rng):
        return self._diffusion_loss(params, model_state, batch, rng, train=True)

    def _diffusion_loss(self, params, model_state, batch, rng, train):
        start, direction, codes = self.encode_window(params, batch)
        x0 = to_diffusion(codes, self._stats(params), self.motion_scale)
        audio = self.audio_input(params, batch)
        variables = self._variables(params, model_state)
        noise_rng, dropout_rng = jax.random.split(rng)
        aux = {}

        def denoise(x_t, t):
            if train:
                (eps, preds), updates = self.model.apply(
                    variables,
                    start,
                    direction,
                    audio,
                    x_t,
                    t,
                    train=True,
                    mutable=["batch_stats"],
                    rngs={"dropout": dropout_rng},
                )
                aux["batch_stats"] = updates["batch_stats"]
            else:
                eps, preds = self.model.apply(variables, start, direction, audio, x_t, t)
            aux["predictions"] = preds
            return eps

        per_example, _ = objectives.diffusion_loss(denoise, self.schedule, x0, noise_rng)
        eps_mse = jnp.mean(per_example)
        total, metrics = eps_mse, {"eps_mse": eps_mse}
        labels = attribute_labels(batch)
        for name, pred in aux["predictions"].items():
            if name in labels:
                err = masked_mse(pred, *labels[name])
                metrics[f"{name}_mse"] = err
                total = total + self.config.loss.attribute * err
        new_state = {"batch_stats": {"model": aux["batch_stats"]}} if train else model_state
        return LossOutput(total, metrics, model_state=new_state)

    # ------------------------------------------------------------------ sampling
    def sample_codes(self, params, model_state, batch, rng, audio=None):
        """DDIM-sampled motion codes (B, T, motion_dim) for frames 1..T of the window, in the
        stage-1 scale; `audio` replaces the batch's audio input (e.g. shuffled)."""
        start, direction, codes = self.encode_window(params, batch)
        audio = self.audio_input(params, batch) if audio is None else audio
        variables = self._variables(params, model_state)
        cond, _ = self.model.apply(variables, audio, method=DiffusionPredictor.condition)
        denoise = functools.partial(self._denoise, variables, cond, start, direction)
        x_T = jax.random.normal(rng, codes.shape, jnp.promote_types(codes.dtype, jnp.float32))
        x0 = samplers.ddim_sample(
            denoise,
            x_T,
            self.schedule,
            num_steps=self.config.diffusion.sample_steps,
            clip_x0=self.clip_x0,
        )
        return from_diffusion(x0, self._stats(params), self.motion_scale)

    def _denoise(self, variables, cond, start, direction, x_t, t):
        return self.model.apply(
            variables, cond, start, direction, x_t, t, method=DiffusionPredictor.denoise
        )

    # ------------------------------------------------------------------ evaluation
    def eval_step(self, params, model_state, batch, rng):
        out = self._diffusion_loss(params, model_state, batch, rng, train=False)
        return {"loss": out.loss, **out.metrics}

    def samples(self, params, model_state, batch, rng):
        """Per example a video: hint frame | ground truth | generated codes rendered on the
        hint frame, side by side."""
        codes = self.sample_codes(params, model_state, batch, rng)
        frames = self.preprocess(batch)["frames"].astype(jnp.float32)
        stage1 = {"params": params["stage1"]["model"]}
        hint = self.stage1.apply(stage1, frames[:, 0], method=AniTalkerMotion.encode)
        b, t = codes.shape[:2]
        tile = lambda x: jnp.repeat(x, t, axis=0)  # noqa: E731
        video = self.stage1.apply(
            stage1,
            tile(hint["h"]),
            [tile(f) for f in hint["feats"]],
            codes.reshape(b * t, -1),
            method=AniTalkerMotion.render,
        )["image"]
        video = video.reshape((b, t) + video.shape[1:])
        hint_video = jnp.broadcast_to(frames[:, :1], video.shape)
        row = jnp.concatenate([hint_video, frames[:, 1:], video], axis=3)
        return {"speech_driven": jnp.clip((row + 1.0) / 2.0, 0.0, 1.0)}

    # ------------------------------------------------------------------ data
    def data(self, split, *, global_batch_size, seed, process_index, process_count, shuffle=None):
        from data_pipelines.loaders import make_loader

        loader = make_loader(
            self.config.data,
            split=split,
            global_batch_size=global_batch_size,
            seed=seed,
            process_index=process_index,
            process_count=process_count,
            shuffle=split == "train" if shuffle is None else shuffle,
        )
        it = iter(loader)
        if self.model.audio_kind == "mfcc":
            return MfccBatches(it, self.window, self.config.data.audio_pad_frames)
        return it


def build(config):
    return AniTalkerStage2Task(config)
