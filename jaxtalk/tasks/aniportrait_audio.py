"""AniPortrait's audio models, trained (the authors released inference only): Audio2Mesh
(`config.model.kind = "mesh"`) and Audio2Pose ("pose"), each with an L1 loss, on loader
windows of raw 16 kHz audio and per-frame attributes.

Group `model`: the whole network, wav2vec2 encoder included, from wav2vec2-base weights
(`jaxtalk import --release=wav2vec2_base`, config.audio.weights) when config.audio.pretrained
is set; its conv feature encoder stays frozen (config.frozen), as the release freezes it.
`config.init_from` starts from an imported release file instead (aniportrait_audio2mesh /
aniportrait_audio2pose). The audio is normalised per window (zero mean, unit variance: the
Wav2Vec2FeatureExtractor's do_normalize) and wav2vec2's features are resampled to the
window's frame count, so any frame rate works (the release runs at 30 fps, prepared data
are 25 fps).

Audio2Mesh: targets are the offsets of the pose-free mesh (`face_mesh`, 468 x 3) from a
reference mesh of the same clip, as the release adds its predictions to the reference
image's canonical mesh (scripts/audio2vid.py). config.loss.reference picks it: "closed"
(default; the window frame whose inner lips are closest, a neutral face like a reference
portrait's) or "first" (the window's first frame). Loss: mean |pred - offsets|.

Audio2Pose: targets are `head_pose` (3 angles in degrees, 3 translations); training is
teacher-forced (query t gets the true pose of frame t-1, zeros before the first), the
identity embedding is the clip's identity index modulo num_ids. The model works in the
units of group `pose_stats` ({"mean", "std"} per dimension, frozen, saved with the
checkpoints): pose_n = (pose - mean) / std. With config.model.normalize_pose they are
measured on config.model.stats_windows training windows when a run starts (angles and
translations differ in units by orders of magnitude); without it they are 0 and 1, the
release's raw units (so that imported weights keep their meaning). Loss: mean |pred_n -
pose_n|. Evaluation also rolls the model out freely from the audio (as inference does) and
reports both L1s beside that of always predicting the mean pose (the constant baseline).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk import fs
from jaxtalk.models.aniportrait.audio2mesh import NUM_VERTICES, Audio2Mesh
from jaxtalk.models.aniportrait.audio2pose import Audio2Pose, rollout
from jaxtalk.models.audio.hubert import WAV2VEC2_BASE
from jaxtalk.train.task import LossOutput, Task

KINDS = ("mesh", "pose")
INNER_LIPS = (13, 14)  # MediaPipe's upper and lower inner-lip centre vertices
TARGETS = {"mesh": "face_mesh", "pose": "head_pose"}
SPLAT_SIZE = 64


# ---------------------------------------------------------------------------- helpers
def normalize_audio(wav):
    """Per-example zero mean and unit variance over the samples (B, samples)."""
    wav = wav.astype(jnp.float32)
    mean = wav.mean(-1, keepdims=True)
    return (wav - mean) * jax.lax.rsqrt(jnp.square(wav - mean).mean(-1, keepdims=True) + 1e-7)


def mouth_opening(mesh):
    """Distance between the inner-lip centre vertices of flat meshes (..., 468*3) -> (...)."""
    v = mesh.reshape(mesh.shape[:-1] + (-1, 3))
    return jnp.linalg.norm(v[..., INNER_LIPS[0], :] - v[..., INNER_LIPS[1], :], axis=-1)


def reference_mesh(mesh, how: str):
    """(B, 468*3) reference of windows (B, T, 468*3): the most closed mouth, or frame 0."""
    if how == "first":
        return mesh[:, 0]
    if how == "closed":
        index = jnp.argmin(mouth_opening(mesh), axis=1)
        return jnp.take_along_axis(mesh, index[:, None, None], axis=1)[:, 0]
    raise ValueError(f"config.loss.reference must be 'closed' or 'first', got {how!r}")


def masked_l1(pred, target, valid):
    """Mean |pred - target| over the examples whose target is valid."""
    err = jnp.abs(pred.astype(jnp.float32) - target)
    per_example = err.reshape(err.shape[0], -1).mean(-1)
    w = valid.astype(jnp.float32)
    return jnp.sum(per_example * w) / jnp.maximum(jnp.sum(w), 1.0)


def pearson(x, y):
    """Correlation of two equally shaped arrays (all elements)."""
    x, y = x.ravel() - x.mean(), y.ravel() - y.mean()
    return jnp.sum(x * y) * jax.lax.rsqrt(jnp.sum(x * x) * jnp.sum(y * y) + 1e-20)


def euler_xyz(angles):
    """Rotation matrices (..., 3, 3) of scipy's extrinsic "xyz" Euler angles in degrees
    (the release's pose_util convention): R = Rz @ Ry @ Rx."""
    x, y, z = jnp.moveaxis(jnp.radians(angles), -1, 0)
    c, s = jnp.cos, jnp.sin
    one, zero = jnp.ones_like(x), jnp.zeros_like(x)
    rx = jnp.stack([one, zero, zero, zero, c(x), -s(x), zero, s(x), c(x)], -1)
    ry = jnp.stack([c(y), zero, s(y), zero, one, zero, -s(y), zero, c(y)], -1)
    rz = jnp.stack([c(z), -s(z), zero, s(z), c(z), zero, zero, zero, one], -1)
    shape = x.shape + (3, 3)
    return rz.reshape(shape) @ ry.reshape(shape) @ rx.reshape(shape)


def splat(points, colour, size: int = SPLAT_SIZE):
    """Points (B, T, N, 2) in 0..1 as dots of `colour` on black frames (B, T, size, size, 3)."""
    b, t, n, _ = points.shape
    ij = jnp.clip(jnp.round(points * (size - 1)).astype(jnp.int32), 0, size - 1)
    flat = (
        jnp.arange(b * t)[:, None] * size * size
        + ij[..., 1].reshape(b * t, n) * size
        + ij[..., 0].reshape(b * t, n)
    )
    hit = jnp.zeros((b * t * size * size,)).at[flat.ravel()].set(1.0)
    return hit.reshape(b, t, size, size, 1) * jnp.asarray(colour, jnp.float32)


def frontal_xy(vertices, reference):
    """The x, y of vertices (..., N, 3) framed by the reference mesh's (B, N, 3) box, 0..1."""
    lo = reference[..., :2].min(-2)[:, None, None]
    hi = reference[..., :2].max(-2)[:, None, None]
    return 0.1 + 0.8 * (vertices[..., :2] - lo) / jnp.maximum(hi - lo, 1e-6).max(-1, keepdims=True)


class WithoutFrames:
    """Loader batches without the window frames (these tasks read audio and attributes
    only); checkpointable like the grain iterator it wraps."""

    def __init__(self, it):
        self._it = it

    def __iter__(self):
        return self

    def __next__(self):
        batch = dict(next(self._it))
        batch.pop("frames", None)
        return batch

    def get_state(self):
        return self._it.get_state()

    def set_state(self, state):
        self._it.set_state(state)


# ---------------------------------------------------------------------------- task
def audio_config(cfg):
    """The wav2vec2 encoder's HubertConfig from config.audio (wav2vec2-base's layout)."""
    return dataclasses.replace(
        WAV2VEC2_BASE,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        conv_dim=(cfg.conv_dim,) * len(WAV2VEC2_BASE.conv_dim),
        pos_conv_kernel=cfg.pos_conv_kernel,
        pos_conv_groups=cfg.pos_conv_groups,
    )


def model_from_config(config):
    m, dtype = config.model, jnp.dtype(config.dtype)
    common = dict(
        audio=audio_config(config.audio),
        latent_dim=m.latent_dim,
        only_last_features=m.only_last_features,
        dtype=dtype,
    )
    if m.kind == "mesh":
        return Audio2Mesh(**common)
    if m.kind == "pose":
        return Audio2Pose(
            **common,
            num_layers=m.num_layers,
            num_heads=m.num_heads,
            ffn_dim=m.ffn_dim,
            num_ids=m.num_ids,
            max_len=m.max_len,
            dropout=m.dropout,
        )
    raise ValueError(f"config.model.kind must be one of {KINDS}, got {m.kind!r}")


class AniPortraitAudioTask(Task):
    EVAL_MODES = ()  # no image outputs: evaluation is eval_step's L1s (and mouth correlation)

    def __init__(self, config):
        self.config = config
        self.kind = config.model.kind
        self.model = model_from_config(config)
        self.target = TARGETS[self.kind]
        if config.data.num_frames > config.model.max_len:
            raise ValueError(
                f"config.data.num_frames={config.data.num_frames} exceeds the model's "
                f"max_len={config.model.max_len}"
            )
        if self.target not in config.data.attributes:
            raise ValueError(f"config.data.attributes must include {self.target!r}")

    # ------------------------------------------------------------------ params
    def _init_inputs(self, frames: int):
        wav = jnp.zeros((1, 640 * frames))
        if self.kind == "mesh":
            return (wav, frames)
        return (wav, jnp.zeros((1, frames, 6)), jnp.zeros((1,), jnp.int32))

    def init(self, rng, batch):
        params = self.model.init(rng, *self._init_inputs(self.config.data.num_frames))["params"]
        out = {"model": params}
        if self.kind == "pose":  # placeholders; pretrained() measures them when asked
            out["pose_stats"] = {"mean": jnp.zeros((6,)), "std": jnp.ones((6,))}
        return out, {}

    def measure_pose_stats(self, windows: int, min_std: float = 1e-3) -> dict:
        """{'mean', 'std'} per dimension of `head_pose` over `windows` training windows."""
        it = self.data(
            "train",
            global_batch_size=self.config.batch_size,
            seed=self.config.seed,
            process_index=0,
            process_count=1,
        )
        batches = [next(it) for _ in range(max(1, -(-windows // self.config.batch_size)))]
        poses = np.concatenate([b["head_pose"][b["head_pose_valid"]] for b in batches])
        poses = poses.reshape(-1, 6).astype(np.float64)
        if not len(poses):
            raise ValueError("no training window has a valid head_pose to measure")
        return {
            "mean": poses.mean(0).astype(np.float32),
            "std": np.maximum(poses.std(0), min_std).astype(np.float32),
        }

    def pretrained(self):
        from jaxtalk.convert import weights

        out = {}
        if self.kind == "pose" and self.config.model.normalize_pose:
            out["pose_stats"] = self.measure_pose_stats(self.config.model.stats_windows)
        if self.config.init_from:
            return {**out, "model": dict(weights.load(self.config.init_from)["params"])}
        if not self.config.audio.pretrained:
            return out
        path = self.config.audio.weights or weights.weights_path("wav2vec2_base")
        if not fs.exists(path):
            raise ValueError(
                f"no wav2vec2-base weights at {path}: run `jaxtalk import "
                "--release=wav2vec2_base --checkpoint=<facebook/wav2vec2-base-960h folder>` "
                "or set --config.audio.weights (or --config.audio.pretrained=False)"
            )
        return {**out, "model": {"audio_encoder": weights.load(path)["params"]}}

    # ------------------------------------------------------------------ model
    def identity(self, batch):
        return batch["identity"].astype(jnp.int32) % self.config.model.num_ids

    def normalized_poses(self, params, poses):
        stats = params["pose_stats"]
        return (poses.astype(jnp.float32) - stats["mean"]) / stats["std"]

    def predict(self, params, batch, train=False, rng=None, audio=None):
        """Mesh: offsets (B, T, 1404); pose: teacher-forced poses (B, T, 6) in the model's
        normalised units. `audio` replaces the batch's (e.g. shuffled between examples)."""
        wav = normalize_audio(batch["audio"] if audio is None else audio)
        frames = batch[self.target].shape[1]
        variables = {"params": params["model"]}
        kw = dict(train=train, rngs={"dropout": rng} if train else {})
        if self.kind == "mesh":
            return self.model.apply(variables, wav, frames, **kw)
        poses = self.normalized_poses(params, batch[self.target])
        return self.model.apply(variables, wav, poses, self.identity(batch), **kw)

    def generate_poses(self, params, batch, audio=None):
        """Free-running poses (B, T, 6) from the audio and identity, as inference makes them,
        in the data's units."""
        wav = normalize_audio(batch["audio"] if audio is None else audio)
        frames = batch[self.target].shape[1]
        poses = rollout(self.model, {"params": params["model"]}, wav, frames, self.identity(batch))
        return poses * params["pose_stats"]["std"] + params["pose_stats"]["mean"]

    def mesh_targets(self, batch):
        """(reference (B, 1404), offsets (B, T, 1404)) of the window's meshes."""
        mesh = batch["face_mesh"].astype(jnp.float32)
        ref = reference_mesh(mesh, self.config.loss.reference)
        return ref, mesh - ref[:, None]

    # ------------------------------------------------------------------ losses
    def losses(self):
        return [("model", self._loss)]

    def _l1(self, params, pred, batch):
        """L1 of a prediction (mesh offsets; poses in the model's units)."""
        valid = batch[f"{self.target}_valid"]
        if self.kind == "mesh":
            return masked_l1(pred, self.mesh_targets(batch)[1], valid)
        return masked_l1(pred, self.normalized_poses(params, batch["head_pose"]), valid)

    def _loss(self, params, model_state, batch, rng):
        l1 = self._l1(params, self.predict(params, batch, train=True, rng=rng), batch)
        return LossOutput(l1, {"l1": l1}, model_state=model_state)

    # ------------------------------------------------------------------ evaluation
    def eval_step(self, params, model_state, batch, rng):
        out = {"l1": self._l1(params, self.predict(params, batch), batch)}
        if self.kind == "mesh":
            ref, offsets = self.mesh_targets(batch)
            pred = self.predict(params, batch)
            out["mouth_correlation"] = pearson(
                mouth_opening(ref[:, None] + pred), mouth_opening(ref[:, None] + offsets)
            )
        else:
            generated = self.normalized_poses(params, self.generate_poses(params, batch))
            out["rollout_l1"] = self._l1(params, generated, batch)
            out["constant_l1"] = self._l1(params, jnp.zeros_like(generated), batch)  # the mean
        return out

    def samples(self, params, model_state, batch, rng):
        """Per example a video of frontal face-mesh dots, true (green) | generated (red):
        mesh = reference + offsets; pose = the first frame's mesh turned by each frame's
        angles (rolled out from the audio)."""
        mesh = batch["face_mesh"].astype(jnp.float32)
        b, t = mesh.shape[:2]
        if self.kind == "mesh":
            ref, offsets = self.mesh_targets(batch)
            true = (ref[:, None] + offsets).reshape(b, t, NUM_VERTICES, 3)
            fake = (ref[:, None] + self.predict(params, batch)).reshape(b, t, NUM_VERTICES, 3)
        else:
            base = mesh[:, 0].reshape(b, 1, NUM_VERTICES, 3)
            base = base - base.mean(-2, keepdims=True)
            turn = lambda pose: jnp.einsum("btij,btnj->btni", euler_xyz(pose[..., :3]), base)  # noqa: E731
            true = turn(batch["head_pose"].astype(jnp.float32))
            fake = turn(self.generate_poses(params, batch))
            ref = base[:, 0].reshape(b, -1)
        frame = ref.reshape(b, NUM_VERTICES, 3)
        row = jnp.concatenate(
            [
                splat(frontal_xy(true, frame), (0.2, 1.0, 0.2)),
                splat(frontal_xy(fake, frame), (1.0, 0.2, 0.2)),
            ],
            axis=3,
        )
        return {f"audio2{self.kind}": row}

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
        return WithoutFrames(iter(loader))


def build(config):
    return AniPortraitAudioTask(config)
