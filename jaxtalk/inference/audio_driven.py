"""Audio-driven animation: a portrait + speech -> 25 fps frames (AniTalker stage 2 + stage 1).

As released: the speech features of the whole utterance are denoised in one DDIM pass into
one motion code per video frame (conditioned on the portrait's start and motion codes),
then the stage-1 renderer draws the codes on the portrait. Rendering runs in fixed-size
chunks under one jit, so memory grows only with the (small) code sequence.

Weights: `stage2` is a file from `jaxtalk import --release=anitalker_stage2` or an
anitalker_stage2 run directory (which also holds the frozen stage-1 model and, for
hubert variants, HuBERT); `stage1` is a file from `jaxtalk import --release=anitalker_stage1`
or an anitalker_stage1 run, required with a stage-2 file. hubert_* variants need HuBERT
weights (`jaxtalk import --release=hubert`).
"""

from __future__ import annotations

import io
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk import fs
from jaxtalk.diffusion import samplers, schedules
from jaxtalk.inference.animator import SAMPLE_RATE, AnimationError, Animator, Driver
from jaxtalk.models.anitalker import stage2 as stage2_lib
from jaxtalk.models.anitalker.stage1 import AniTalkerMotion
from jaxtalk.models.anitalker.stage2 import DiffusionPredictor
from jaxtalk.models.audio import mfcc as mfcc_lib
from jaxtalk.models.layers.weight_cache import WEIGHT_CACHE, weight_cache
from jaxtalk.models.pixels import to_model_range
from jaxtalk.train import checkpoints

FPS = 25
SILENCE = 1e-4  # peak amplitude below which the audio counts as silent


# ---------------------------------------------------------------------------- loading
def load_stage1(path: str) -> tuple[dict, dict]:
    """(AniTalkerMotion params, model config) from a weights file or an anitalker_stage1 run."""
    if not fs.exists(path):
        raise AnimationError(f"{path}: no such stage-1 weights file or run")
    if checkpoints.is_run(path):
        config = checkpoints.run_config(path)
        if config.get("task") != "anitalker_stage1":
            raise AnimationError(f"{path}: a {config.get('task')!r} run, not anitalker_stage1")
        return checkpoints.group_variables(path, "generator")["params"]["model"], config["model"]
    from jaxtalk.convert import weights

    stored = weights.load(path)
    given = weights.module_options(
        AniTalkerMotion, stored["model_config"], path, stage2_lib.STAGE1_KEYS
    )
    return stored["params"], {
        "style_dim": 512,
        "motion_dim": 20,
        "size": 256,
        "width": 1.0,
        **given,
    }


def parse_controls(model: DiffusionPredictor, pose=None, location=None, scale=None) -> dict:
    """Release-style control values -> the predictor's keyword controls; rejects a control
    the variant does not take. pose: (3,) or (T, 3) in [-1, 1] (degrees / 90)."""
    given = {"pose": pose, "location": location, "scale": scale}
    controls = {}
    for name, value in given.items():
        if value is None:
            continue
        if name not in model.attributes:
            takes = ", ".join(model.attributes) or "no controls"
            raise AnimationError(
                f"the {model.infer_type} model takes {takes}; cannot control {name}"
            )
        controls[name] = np.asarray(value, np.float32)
    return controls


def load_pose_file(path: str) -> np.ndarray:
    """A (T, 3) yaw/pitch/roll sequence in [-1, 1] from .npy or whitespace/comma text."""
    try:
        data = fs.read_bytes(path)
        if path.endswith(".npy"):
            seq = np.load(io.BytesIO(data))  # allow_pickle stays off: data, never code
        else:
            text = data.decode("utf-8-sig")
            seq = np.loadtxt(io.StringIO(text), delimiter="," if "," in text else None, ndmin=2)
    except (OSError, ValueError) as e:
        raise AnimationError(f"{path}: not a readable pose sequence ({e})") from None
    seq = np.asarray(seq, np.float32)
    if seq.ndim != 2 or seq.shape[1] != 3:
        raise AnimationError(
            f"{path}: a pose sequence must be (T, 3) yaw/pitch/roll, got {seq.shape}"
        )
    return seq


def fit_length(seq: np.ndarray, frames: int) -> np.ndarray:
    """Truncates a per-frame sequence to `frames`, or holds its last value to reach it."""
    if len(seq) >= frames:
        return seq[:frames]
    return np.concatenate([seq, np.repeat(seq[-1:], frames - len(seq), 0)])


def batch_controls(controls: Mapping | None, frames: int) -> dict:
    """`parse_controls`' values as the predictor takes them for one clip of `frames`: a
    per-frame (T, dims) control fitted to the clip, with its batch axis."""
    return {
        k: jnp.asarray(fit_length(v, frames)[None] if v.ndim == 2 else v)
        for k, v in (controls or {}).items()
    }


def check_audio(wav: np.ndarray, what: str) -> None:
    if wav.size < 4 * 640:
        raise AnimationError(
            f"{what}: the audio is too short ({wav.size / SAMPLE_RATE:.2f} s; need at least 0.16 s)"
        )
    if not np.all(np.isfinite(wav)) or float(np.max(np.abs(wav))) < SILENCE:
        raise AnimationError(
            f"{what}: the audio is silent (peak amplitude "
            f"{float(np.max(np.abs(wav))):.2g}); nothing to animate"
        )


# ---------------------------------------------------------------------------- animator
class AudioAnimator(Animator):
    """Speech -> HuBERT/MFCC features -> stage-2 DDIM motion codes for the whole utterance
    -> stage-1 render chunk by chunk (`Animator` hooks: `start` samples, `drive` renders)."""

    driver = Driver.AUDIO
    fps = FPS

    def __init__(
        self,
        model: DiffusionPredictor,
        predictor_variables: Mapping,
        stage1_params,
        stage1_config: Mapping,
        *,
        motion_scale: float = 1.0,
        clip_x0: float | None = 1.0,
        hubert_params=None,
        hubert_size: str = "large",
        chunk: int = 8,
        motion_stats: Mapping | None = None,
    ):
        self.model = model
        self.variables = {
            "params": predictor_variables["params"],
            "batch_stats": predictor_variables.get("batch_stats", {}),
        }
        self.stage1 = stage2_lib.stage1_from_config(stage1_config)
        self.stage1_params = {"params": stage1_params}
        self.size = int(stage1_config["size"])
        # stage 1's weight-only arrays, computed once for these weights
        image = jnp.zeros((1, self.size, self.size, 3), jnp.float32)
        cache = weight_cache(self.stage1, self.stage1_params, image, image)
        self.stage1_cached = {**self.stage1_params, WEIGHT_CACHE: cache}
        self.motion_scale, self.clip_x0, self.chunk = motion_scale, clip_x0, chunk
        self.motion_stats = motion_stats  # a run's per-dimension code statistics, if it has them
        self.schedule = schedules.make_schedule("linear", 1000)
        self.hubert = None
        if self.model.audio_kind == "hubert":
            if hubert_params is None:
                raise AnimationError(
                    f"the {self.model.infer_type} model needs HuBERT weights "
                    "(jaxtalk import --release=hubert, or --hubert=FILE)"
                )
            from jaxtalk.models.audio import hubert as hubert_lib

            self.hubert = hubert_lib.HubertModel(stage2_lib.hubert_config(hubert_size))
            self.hubert_params = {"params": hubert_params}
        self._encode = jax.jit(lambda p, x: self.stage1.apply(p, x, method=AniTalkerMotion.encode))
        self._render = jax.jit(self._render_chunk)
        self._generate = jax.jit(self._generate_codes, static_argnames=("num_steps",))

    @classmethod
    def from_paths(
        cls, stage2: str, stage1: str | None = None, hubert: str | None = None, **kw
    ) -> "AudioAnimator":
        if not fs.exists(stage2):
            raise AnimationError(f"{stage2}: no such stage-2 weights file or run")
        if checkpoints.is_run(stage2):
            return cls.from_run(stage2, stage1=stage1, hubert=hubert, **kw)
        from jaxtalk.convert import weights

        return cls.from_stored(weights.load(stage2), stage2, stage1=stage1, hubert=hubert, **kw)

    @classmethod
    def from_stored(
        cls, stored: dict, stage2: str, stage1: str | None = None, hubert: str | None = None, **kw
    ) -> "AudioAnimator":
        """`weights.load`'s dict of a `jaxtalk import --release=anitalker_stage2` file."""
        from jaxtalk.convert import weights

        config = stored["model_config"]
        if "infer_type" not in config:
            raise AnimationError(f"{stage2}: not an anitalker_stage2 weights file")
        predictor = DiffusionPredictor(**weights.module_options(DiffusionPredictor, config, stage2))
        if not stage1:
            raise AnimationError("a stage-2 weights file needs --stage1 (weights or run) to render")
        s1_params, s1_config = load_stage1(stage1)
        hubert_params = (
            _hubert_params(hubert) if predictor.infer_type.startswith("hubert") else None
        )
        return cls(predictor, stored, s1_params, s1_config, hubert_params=hubert_params, **kw)

    @classmethod
    def from_run(
        cls,
        workdir: str,
        step: int | None = None,
        stage1: str | None = None,
        hubert: str | None = None,
        **kw,
    ) -> "AudioAnimator":
        """An anitalker_stage2 run (its latest checkpoint; it carries its stage 1)."""
        if step is not None:
            raise AnimationError(
                f"{workdir}: audio-driven runs animate from their latest checkpoint"
            )
        config = checkpoints.run_config(workdir)
        if config.get("task") != "anitalker_stage2":
            raise AnimationError(f"{workdir}: a {config.get('task')!r} run, not anitalker_stage2")
        predictor = checkpoints.group_variables(workdir, "model")
        if stage1:
            s1_params, s1_config = load_stage1(stage1)
        else:
            s1_params = checkpoints.group_variables(workdir, "stage1")["params"]["model"]
            s1_config = config["stage1"]
        hubert_params = None
        if config["model"]["infer_type"].startswith("hubert"):
            hubert_params = (
                _hubert_params(hubert)
                if hubert
                else checkpoints.group_variables(workdir, "hubert")["params"]
            )
        d = config["diffusion"]
        # normalize_motion runs keep the per-dimension code statistics as a frozen group.
        motion_stats = (
            checkpoints.group_variables(workdir, "motion_stats")["params"]
            if d.get("normalize_motion")
            else None
        )
        model = stage2_lib.predictor_from_config(config["model"], config["stage1"])
        return cls(
            model,
            predictor,
            s1_params,
            s1_config,
            motion_scale=d["motion_scale"],
            clip_x0=d["clip_x0"] if d["clip_x0"] > 0 else None,
            hubert_params=hubert_params,
            hubert_size=config["hubert"]["size"],
            motion_stats=motion_stats,
            **kw,
        )

    # ------------------------------------------------------------------ features
    def features(self, wav: np.ndarray) -> tuple[jnp.ndarray, int]:
        """The predictor's audio input for the whole utterance and its frame count."""
        if self.hubert is None:
            feats, frames = mfcc_lib.video_aligned(mfcc_lib.anitalker_mfcc(wav))
            return jnp.asarray(feats[None]), frames
        frames = len(wav) // stage2_lib.SAMPLES_PER_FRAME
        wav = jnp.asarray(wav[: frames * stage2_lib.SAMPLES_PER_FRAME][None])
        states = jax.jit(lambda p, w: stage2_lib.hubert_states(self.hubert, p, w))(
            self.hubert_params, wav
        )
        return states[:, : 2 * frames], frames

    # ------------------------------------------------------------------ generation
    def _generate_codes(self, variables, audio, start, direction, x_T, controls, num_steps):
        cond, _ = self.model.apply(
            variables,
            audio,
            method=DiffusionPredictor.condition,
            **controls,
        )
        denoise = lambda x, t: self.model.apply(
            variables,
            cond,
            start,
            direction,
            x,
            t,  # noqa: E731
            method=DiffusionPredictor.denoise,
        )
        x0 = samplers.ddim_sample(
            denoise, x_T, self.schedule, num_steps=num_steps, clip_x0=self.clip_x0
        )
        return stage2_lib.from_diffusion(x0[0], self.motion_stats, self.motion_scale)

    def _codes(self, src, wav, seed, controls, ddim_steps):
        audio, frames = self.features(wav)
        controls = batch_controls(controls, frames)
        x_T = jax.random.normal(
            jax.random.PRNGKey(seed),
            (1, frames, self.model.motion_dim),
            jnp.promote_types(self.model.dtype, jnp.float32),
        )
        return self._generate(
            self.variables, audio, src["h"], src["alpha"], x_T, controls, num_steps=ddim_steps
        )

    def motion_codes(
        self,
        source: np.ndarray,
        wav: np.ndarray,
        *,
        seed: int = 0,
        controls: Mapping | None = None,
        ddim_steps: int = 50,
    ):
        """(T, motion_dim) codes for 16 kHz speech on a (S,S,3) uint8 portrait; plus the
        encoded source."""
        src = self.prepare(source)
        return self._codes(src, wav, seed, controls, ddim_steps), src

    def controls(self, pose=None, pose_file: str | None = None, location=None, scale=None) -> dict:
        """The release's control values (pose (3,) yaw/pitch/roll or a (T, 3) `pose_file`,
        face location, face scale) -> this model's controls; rejects those it does not take."""
        if "pose" in self.model.attributes:
            pose = load_pose_file(pose_file) if pose_file else pose
        elif pose_file:
            raise AnimationError(
                f"the {self.model.infer_type} model takes no pose control (--pose_file)"
            )
        else:
            pose = None
        return parse_controls(self.model, pose, location, scale)

    # ------------------------------------------------------------------ the contract
    def prepare(self, source: np.ndarray):
        return self._encode(self.stage1_cached, to_model_range(source[None]))

    def start(
        self,
        state,
        wav: np.ndarray,
        *,
        seed: int = 0,
        controls: Mapping | None = None,
        ddim_steps: int = 50,
        what: str = "audio",
        pose=None,
        pose_file: str | None = None,
        face_location=None,
        face_scale=None,
    ):
        """Mono 16 kHz speech (named `what` in errors) -> one motion code per 25 fps frame,
        sampled in one DDIM pass of `ddim_steps` from `seed`'s noise, under `controls` (the
        predictor's, see `parse_controls`) or the release's control values (pose,
        pose_file, face_location, face_scale; see `controls`)."""
        check_audio(np.asarray(wav), what)
        if any(v is not None for v in (pose, pose_file, face_location, face_scale)):
            controls = dict(
                controls or {}, **self.controls(pose, pose_file, face_location, face_scale)
            )
        return state, np.asarray(self._codes(state, wav, seed, controls, ddim_steps))

    def drive(self, state, steps: np.ndarray):
        return self._render(self.stage1_cached, state["h"], state["feats"], jnp.asarray(steps))

    def _render_chunk(self, params, h, feats, codes):
        n = codes.shape[0]
        tile = lambda x: jnp.broadcast_to(x, (n,) + x.shape[1:])  # noqa: E731
        return self.stage1.apply(
            params, tile(h), [tile(f) for f in feats], codes, method=AniTalkerMotion.render
        )["image"]


def _hubert_params(path: str | None):
    from jaxtalk.convert import weights

    path = path or str(weights.weights_path("hubert"))
    if not fs.exists(path):
        raise AnimationError(f"{path}: no HuBERT weights (jaxtalk import --release=hubert)")
    return weights.load(path)["params"]


# What this module drives (jaxtalk/discovery.py): the weights kind and the stage-2 task name.
ANIMATORS = {"anitalker_stage2": AudioAnimator}
