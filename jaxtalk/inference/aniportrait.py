"""AniPortrait animation: face-mesh drawings -> Lmk2Video, from a driving video's landmarks
or from speech (Audio2Mesh + Audio2Pose -> landmarks).

Weights: `jaxtalk import --release=aniportrait` (with `sd_vae` and
`sd_image_variations_image_encoder` in the same weights directory; the PoseGuider sees
its drawings in [-1, 1] and normalises each context window with its own statistics, as the
release's pipeline runs it) or an `aniportrait` training run of either stage (its own
VAE / image encoder sources, pose range and diffusion settings; stage 1 has no motion
modules). Sampling as released: 25 DDIM steps, guidance 3.5, 16-frame windows overlapping
by 4 (a run: its config's `diffusion`).

The hooks: `prepare` keeps the source; `start` makes the landmarks of every frame, draws
them (uint8, the only per-frame data on the host besides the output) and samples the
latents of the whole video in one jitted call whose memory is flat in the video length
(the PoseGuider runs per context window inside the sampler); `drive` decodes the latents
`chunk` frames at a time.

Landmarks (`start` options, from `read_landmarks` or MediaPipe with `landmarks_model`):
dicts of `face_mesh_xy` (T, 478 * 2) in 0..1 of the model's square input, optional
`face_mesh` (T, 468 * 3) pose-free vertices and `head_pose` (T, 6) (degrees, centre x, y,
scale in the same 0..1 units: data_pipelines/landmarks.py's format mapped into the crop).

Video-driven (scripts/vid2vid.py): with meshes and poses on both sides, the driving
vertices relative to its most neutral frame are added to the source's mesh, the rotation is
the driving frame's, the centre and scale move relative to the first driving frame from the
source's, the pose is smoothed over 3 frames, and the mesh projected. The release picks the
neutral frame by MediaPipe's blendshapes, which the landmark format lacks: here it is the
frame with the most closed mouth among those whose eyes are at least half as open as their
median (no blink). With 2-D landmarks only (what MediaPipe extraction gives), the driving
points are mapped onto the source's by the similarity transform (scale, rotation,
translation) that best fits the first driving frame to the source.

Speech-driven (scripts/audio2vid.py), 30 fps: Audio2Mesh's vertex offsets on the source's
mesh; Audio2Pose's poses from 5-second chunks (the last merged into the one before, an
identity drawn from `seed`), angles halved, smoothed over 7 frames. The release applies its
pose on top of the source's MediaPipe transform (perspective, centimetres); here the
rotation is composed with the source's, the x, y translation moves the centre through the
source's scale, and the depth translation is dropped (weak perspective has no depth).
"""

from __future__ import annotations

import dataclasses
import zipfile
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial.transform import Rotation

from jaxtalk import fs
from jaxtalk.diffusion import recipes
from jaxtalk.diffusion.context import ContextWindows
from jaxtalk.diffusion.samplers import DDIMConfig
from jaxtalk.inference.animator import SAMPLE_RATE, AnimationError, Animator, Driver
from jaxtalk.media import face_mesh
from jaxtalk.models.aniportrait.lmk2video import Lmk2Video, split_motion

KIND = "aniportrait"
RELEASE_SIZE = 512
IMAGE_ENCODER = "sd_image_variations_image_encoder"
SPEECH_FPS = 30  # audio2vid.py's default
POSE_CHUNK_SECONDS = 5  # audio2vid.py: Audio2Pose runs on 5-second chunks
POSE_ANGLE_SCALE = 0.5
NUM_IDS = 100  # the release draws an identity in [0, 100)
WIDTHS = {"face_mesh_xy": face_mesh.NUM_POINTS * 2, "face_mesh": face_mesh.NUM_VERTICES * 3}
WIDTHS["head_pose"] = 6
INNER_LIPS = (13, 14)
EYE_LIDS = ((159, 145), (386, 374))  # upper / lower lid centres, right and left eye
FLIP_Y = np.diag([1.0, -1.0, 1.0])  # MediaPipe's metric frame (y up) <-> the format's (y down)


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How the video is sampled: the DDIM scheduler, guidance and context windows."""

    ddim: DDIMConfig
    guidance_scale: float
    windows: ContextWindows
    pose_batch_stats: bool  # PoseGuider BatchNorms on each window's statistics


# ---------------------------------------------------------------------------- landmarks
def read_landmarks(
    path: str,
    box,
    rows: np.ndarray | None = None,
    *,
    frame_fps: float | None = None,
    need: int | None = None,
) -> dict[str, np.ndarray]:
    """A landmark file (data_pipelines/landmarks.py's format, source pixels) -> its arrays
    in 0..1 of the square crop `box` (x, y, side[, side]). `rows`: which rows (default: the
    first only); or `need` frames at `frame_fps` picked by time from the file's own fps."""
    if not fs.exists(path):
        raise AnimationError(f"{path}: no such landmark file")
    try:
        with fs.local_file(path) as local, np.load(local, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise AnimationError(
            f"{path}: not a numpy .npz landmark file ({type(e).__name__})"
        ) from None
    if "face_mesh_xy" not in arrays:
        raise AnimationError(f"{path}: has no face_mesh_xy")
    for name, width in WIDTHS.items():
        a = arrays.get(name)
        if a is not None and (a.ndim != 2 or a.shape[1] != width):
            raise AnimationError(f"{path}: {name} has shape {a.shape}, want (frames, {width})")
    total = len(arrays["face_mesh_xy"])
    if need is not None:
        file_fps = float(arrays.get("fps", frame_fps or 1.0))
        rows = np.round(np.arange(need) / float(frame_fps or file_fps) * file_fps).astype(int)
        if need and rows[-1] >= total:
            raise AnimationError(
                f"{path}: has {total} frames of landmarks, the video needs {rows[-1] + 1}"
            )
    rows = np.zeros(1, int) if rows is None else np.asarray(rows)
    x, y, side = (float(v) for v in list(box)[:3])
    out = {}
    for name in WIDTHS:
        if name not in arrays:
            continue
        values = arrays[name][rows].astype(np.float64)
        if not np.isfinite(values).all():
            raise AnimationError(f"{path}: {name} is not finite at the frames used")
        if name == "face_mesh_xy":
            values = ((values.reshape(len(rows), -1, 2) - (x, y)) / side).reshape(len(rows), -1)
        elif name == "head_pose":
            values[:, 3:5] = (values[:, 3:5] - (x, y)) / side
            values[:, 5] /= side
        out[name] = values
    return out


def extract_landmarks(model_path: str, frames: np.ndarray, what: str) -> dict[str, np.ndarray]:
    """MediaPipe's FaceLandmarker (the optional extra) on uint8 frames (T, S, S, 3): the
    format's arrays in 0..1 of the frames; a frame without a face keeps the previous one's."""
    from data_pipelines import landmarks as lm  # the extra's loader lives with the data tools

    detect = lm.mediapipe_detector(model_path)
    size = frames.shape[2]
    xy, poses, last = [], [], None
    for frame in frames:
        found = detect(frame)
        if found is not None:
            points, matrix = found
            pose = lm.head_pose_from_matrix(matrix, size, size) if matrix is not None else None
            last = (np.asarray(points, np.float64)[:, :2], pose)
        if last is None:
            continue
        xy.append(last[0].reshape(-1))
        poses.append(last[1])
    if len(xy) != len(frames):
        raise AnimationError(f"{what}: MediaPipe finds no face in its first frame")
    out = {"face_mesh_xy": np.stack(xy)}
    if all(p is not None for p in poses):
        out["head_pose"] = np.stack(poses)
        out["head_pose"][:, 3:] /= size
    return out


def _points(landmarks: Mapping, what: str) -> np.ndarray:
    xy = np.asarray(landmarks.get("face_mesh_xy", np.zeros((0, 0))), np.float64)
    if xy.ndim != 2 or xy.shape[1] != WIDTHS["face_mesh_xy"] or not len(xy):
        raise AnimationError(
            f"{what}: face_mesh_xy must be (frames, {WIDTHS['face_mesh_xy']}), got {xy.shape}"
        )
    return xy.reshape(len(xy), -1, 2)


def _has_3d(landmarks: Mapping) -> bool:
    return "face_mesh" in landmarks and "head_pose" in landmarks


def smooth(seq: np.ndarray, window: int) -> np.ndarray:
    """The release's smooth_pose_seq: each row the mean of the `window` rows around it
    (fewer at the ends)."""
    half, out = window // 2, np.empty_like(seq)
    for i in range(len(seq)):
        out[i] = seq[max(0, i - half) : i + half + 1].mean(0)
    return out


def neutral_frame(mesh: np.ndarray) -> int:
    """The most closed mouth among the frames whose eyes are at least half as open as their
    median: the stand-in for the release's least-blendshape frame."""
    v = mesh.reshape(len(mesh), -1, 3)
    mouth = np.linalg.norm(v[:, INNER_LIPS[0]] - v[:, INNER_LIPS[1]], axis=-1)
    eyes = sum(np.linalg.norm(v[:, a] - v[:, b], axis=-1) for a, b in EYE_LIDS)
    open_eyes = eyes >= 0.5 * np.median(eyes)
    return int(np.argmin(np.where(open_eyes, mouth, np.inf)))


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (scale, rotation, translation) mapping points src (N, 2) onto dst
    in the least-squares sense (Umeyama)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    scale = np.trace(np.diag(sig) @ d) / max(a.var(0).sum(), 1e-12)
    return np.concatenate([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]], 1)


def transfer_motion(source: Mapping, driving: Mapping, what: str = "driving") -> np.ndarray:
    """The points (T, N, 2) to draw, in 0..1: vid2vid.py's 3-D transfer when both sides have
    meshes and poses, else the similarity fit of the first frame (see the module doc)."""
    if _has_3d(source) and _has_3d(driving):
        mesh = np.asarray(driving["face_mesh"], np.float64)
        base = np.asarray(source["face_mesh"], np.float64)[0]
        verts = mesh - mesh[neutral_frame(mesh)] + base
        pose = np.array(driving["head_pose"], np.float64)
        ref = np.asarray(source["head_pose"], np.float64)[0]
        pose[:, 3:5] = pose[:, 3:5] - pose[0, 3:5] + ref[3:5]
        pose[:, 5] = pose[:, 5] / pose[0, 5] * ref[5]
        n = face_mesh.NUM_VERTICES
        return face_mesh.project(verts.reshape(len(verts), n, 3), smooth(pose, 3))
    points, target = _points(driving, what), _points(source, "source")[0]
    fit = similarity(points[0], target)
    return points @ fit[:, :2].T + fit[:, 2]


def speech_poses(poses: np.ndarray, source_pose: np.ndarray) -> np.ndarray:
    """Audio2Pose's release poses (T, 6: angles in degrees and translation, MediaPipe's
    frame, relative to the source's transform) on the source's head_pose -> (T, 6) in the
    format's weak perspective (see the module doc)."""
    ref = Rotation.from_euler("xyz", source_pose[:3], degrees=True).as_matrix()
    rel = Rotation.from_euler("xyz", poses[:, :3], degrees=True).as_matrix()
    rot = ref[None] @ (FLIP_Y @ rel @ FLIP_Y)
    shift = np.einsum("ij,tj->ti", ref, poses[:, 3:6] @ FLIP_Y)[:, :2] * source_pose[5]
    out = np.empty((len(poses), 6))
    out[:, :3] = Rotation.from_matrix(rot).as_euler("xyz", degrees=True)
    out[:, 3:5] = source_pose[3:5] + shift
    out[:, 5] = source_pose[5]
    return out


def pose_chunks(frames: int, fps: int = SPEECH_FPS) -> list[tuple[int, int]]:
    """audio2vid.py's (first frame, frame count) per Audio2Pose call: 5-second chunks, the
    remainder merged into the last full one."""
    size = POSE_CHUNK_SECONDS * fps
    starts = list(range(0, max(frames - size, 0) + 1, size)) if frames >= size else [0]
    bounds = starts[1:] + [frames]
    return [(a, b - a) for a, b in zip(starts, bounds)]


def normalize_speech(wav: np.ndarray) -> np.ndarray:
    """Wav2Vec2FeatureExtractor's do_normalize over the whole utterance."""
    wav = np.asarray(wav, np.float64)
    return ((wav - wav.mean()) / np.sqrt(wav.var() + 1e-7)).astype(np.float32)


# ---------------------------------------------------------------------------- loading
def _load_weights(path: str, what: str) -> dict:
    from jaxtalk.convert import weights

    if not fs.exists(path):
        raise AnimationError(f"{path}: no such {what} weights file")
    return weights.load(path)


def _sibling(path: str, release: str) -> str:
    """`release`'s weights file in the directory of `path` (a weights file)."""
    from jaxtalk.convert import weights

    return weights.weights_path(release, fs.dirname(path))


def _audio_models(lmk2video_path: str, audio2mesh: str | None, audio2pose: str | None):
    """{kind: (module, variables)} of Audio2Mesh / Audio2Pose weights files (default: the
    release files beside `lmk2video_path`)."""
    from jaxtalk.convert import aniportrait_audio

    out = {}
    for kind, given in (("mesh", audio2mesh), ("pose", audio2pose)):
        path = given or _sibling(lmk2video_path, f"aniportrait_audio2{kind}")
        stored = _load_weights(path, f"aniportrait_audio2{kind} (--audio2{kind})")
        config = dict(stored.get("model_config") or {})
        if config.get("kind") != f"aniportrait_audio2{kind}":
            raise AnimationError(f"{path}: not an aniportrait_audio2{kind} weights file")
        model = aniportrait_audio.model_from_options(kind, config)
        variables = {"params": stored["params"]}
        if stored.get("buffers"):
            variables["buffers"] = stored["buffers"]
        out[kind] = (model, variables)
    return out


# ---------------------------------------------------------------------------- animator
class AniPortraitAnimator(Animator):
    """Landmark drawings of every frame -> Lmk2Video latents (`start`) -> frames (`drive`)."""

    driver = Driver.VIDEO
    drivers = (Driver.VIDEO, Driver.AUDIO)

    def __init__(
        self,
        pipe: Lmk2Video,
        variables: Mapping,
        sampling: Sampling,
        *,
        size: int,
        release_canvas: bool,
        driver: Driver = Driver.VIDEO,
        audio_models: Mapping | None = None,
        chunk: int = 8,
        source: str = "weights",
    ):
        self.pipe, self.variables, self.sampling = pipe, dict(variables), sampling
        self.size, self.release_canvas, self.chunk = size, release_canvas, chunk
        self.driver, self.source_name = Driver(driver), source
        self.audio_models = audio_models
        if self.driver is Driver.AUDIO:
            self.fps = SPEECH_FPS
            if audio_models is None:
                raise AnimationError(f"{source}: speech needs Audio2Mesh and Audio2Pose weights")
        self.variables = jax.device_put(self.variables)  # once, not per call
        self._sample = jax.jit(self._sample_latents, static_argnames=("ddim",))
        self._decode = jax.jit(lambda v, x: self.pipe.decode(v, x)[0])
        self._speech = jax.jit(self._speech_models, static_argnames=("frames", "chunks"))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_stored(cls, stored: dict, path: str, **kw) -> "AniPortraitAnimator":
        """An `aniportrait` release file; sd_vae / the image encoder from its directory
        (or `vae=` / `image_encoder=` files); speech models from `audio2mesh=` /
        `audio2pose=` (default: beside it)."""
        from jaxtalk.convert import aniportrait as convert
        from jaxtalk.convert import clip_vision, sd_vae

        frozen = {}
        for group, release in (("vae", "sd_vae"), ("image_encoder", IMAGE_ENCODER)):
            file = kw.pop(group, None) or _sibling(path, release)
            frozen[group] = _load_weights(file, f"{release} (--{group})")
        cfg = convert.configs(stored.get("model_config") or {})
        keep = ("heads", "num_blocks", "attention_blocks", "max_len", "position_encoding")
        motion = {k: v for k, v in cfg["motion_module"].items() if k in keep}
        pipe = Lmk2Video(
            cfg["denoiser"],
            cfg["pose_guider"],
            motion_module=motion,
            pose_range="-11",
            vae_config=sd_vae.vae_config(frozen["vae"].get("model_config") or {}),
            clip_config=clip_vision.clip_config(frozen["image_encoder"].get("model_config") or {}),
        )
        params = stored["params"]
        denoiser, motion_params = split_motion(params["denoiser"])
        variables = {
            "reference": {"params": params["reference"]},
            "denoiser": {"params": denoiser},
            "motion": motion_params,
            "pose_guider": {
                "params": params["pose_guider"],
                "batch_stats": (stored.get("batch_stats") or {}).get("pose_guider", {}),
            },
        }
        variables.update({group: stored["params"] for group, stored in frozen.items()})
        release = recipes.aniportrait()
        sampling = Sampling(release.sample, release.guidance_scale, release.context, True)
        size = int((stored.get("model_config") or {}).get("image_size", RELEASE_SIZE))
        return cls._build(pipe, variables, sampling, size, size == RELEASE_SIZE, path, path, **kw)

    @classmethod
    def from_run(cls, workdir: str, step: int | None = None, **kw) -> "AniPortraitAnimator":
        """An `aniportrait` run of either stage, with the VAE / image encoder it recorded."""
        from jaxtalk.train import checkpoints

        step = checkpoints.resolve_step(workdir, step)
        config = checkpoints.run_config(workdir, step)
        if config.get("task") != KIND:
            raise AnimationError(f"{workdir}: a {config.get('task')!r} run, not {KIND}")
        stage2 = config.get("stage") == "stage2"
        pipe = Lmk2Video.from_config(config["model"], motion=stage2)
        if stage2:
            variables = dict(checkpoints.group_variables(workdir, "base", step)["params"])
            variables["motion"] = checkpoints.group_variables(workdir, "motion", step)["params"]
        else:
            model = checkpoints.group_variables(workdir, "model", step)
            variables = {k: {"params": v} for k, v in model["params"].items()}
            stats = (model.get("batch_stats") or {}).get("pose_guider")
            if stats:
                variables["pose_guider"]["batch_stats"] = stats
        for group in ("vae", "image_encoder"):
            if getattr(pipe, group) is not None:
                tree = checkpoints.group_variables(workdir, group, step)["params"]
                variables[group] = tree.get("params", tree) if len(tree) == 1 else tree
        recipe, ddim = recipes.of_run(config["diffusion"])
        sampling = Sampling(ddim, recipe.guidance_scale, recipe.context, False)
        data = config.get("data") or {}
        size = int(data.get("image_size", RELEASE_SIZE))
        canvas = bool(data.get("pose_release_canvas", False))
        return cls._build(pipe, variables, sampling, size, canvas, workdir, None, **kw)

    @classmethod
    def _build(cls, pipe, variables, sampling, size, canvas, source, weights_file, **kw):
        driver = Driver(kw.pop("driver", Driver.VIDEO))
        a2m, a2p = kw.pop("audio2mesh", None), kw.pop("audio2pose", None)
        audio = None
        if driver is Driver.AUDIO:
            if weights_file is None and not (a2m and a2p):
                raise AnimationError(f"{source}: a run needs --audio2mesh and --audio2pose files")
            audio = _audio_models(weights_file or "", a2m, a2p)
        return cls(
            pipe, variables, sampling, size=size, release_canvas=canvas, driver=driver,
            audio_models=audio, source=source, **kw,
        )  # fmt: skip

    # ------------------------------------------------------------------ device functions
    def _sample_latents(self, variables, reference, reference_drawing, drawings, rng, ddim):
        s = self.sampling
        ref = reference.astype(jnp.float32) / 127.5 - 1.0
        return self.pipe.sample_latents(
            variables, ref[None], reference_drawing[None], drawings[None], rng, ddim,
            s.guidance_scale, s.windows, pose_batch_stats=s.pose_batch_stats,
        )  # fmt: skip

    def _speech_models(self, variables, wav, identity, frames, chunks):
        """(Audio2Mesh offsets (T, 1404), Audio2Pose poses per chunk) for normalised speech."""
        from jaxtalk.models.aniportrait.audio2pose import rollout

        mesh, pose = self.audio_models["mesh"][0], self.audio_models["pose"][0]
        offsets = mesh.apply(variables["mesh"], wav[None], frames)[0]
        poses = []
        for start, count in chunks:  # the release splits the samples every 5 s
            a = start * SAMPLE_RATE // SPEECH_FPS
            b = (
                wav.shape[0]
                if start + count == frames
                else (start + count) * SAMPLE_RATE // SPEECH_FPS
            )
            poses.append(rollout(pose, variables["pose"], wav[None, a:b], count, identity)[0])
        return offsets, jnp.concatenate(poses)

    # ------------------------------------------------------------------ the contract
    def prepare(self, source: np.ndarray):
        return {"source": np.asarray(source, np.uint8)}

    def draw(self, points: np.ndarray) -> np.ndarray:
        """Points (T, N, 2) in 0..1 -> uint8 drawings (T, size, size, 3), as released."""
        return face_mesh.draw_face_meshes(points, self.size, release_canvas=self.release_canvas)

    def start(
        self,
        state,
        driving,
        *,
        source_landmarks: Mapping | None = None,
        driving_landmarks: Mapping | None = None,
        landmarks_model: str | None = None,
        seed: int = 0,
        ddim_steps: int | None = None,
        what: str = "driving",
        **other,
    ):
        """Options: `source_landmarks` / `driving_landmarks` (dicts, see the module doc; or
        extracted with MediaPipe from `landmarks_model`), `seed` of the noise (and speech's
        Audio2Pose identity), `ddim_steps` (default: the release's / the run's); `what`
        names the driver in errors."""
        if other:
            raise AnimationError(f"AniPortrait takes no options {sorted(other)}")
        ddim = self.sampling.ddim
        if ddim_steps is not None:
            if int(ddim_steps) < 1:
                raise AnimationError(f"ddim_steps must be at least 1, got {ddim_steps}")
            ddim = dataclasses.replace(ddim, num_steps=int(ddim_steps))
        source = state["source"]
        if source_landmarks is None:
            if not landmarks_model:
                raise AnimationError(
                    "AniPortrait needs the source's landmarks: --source_landmarks=FILE.npz "
                    "or --landmarks_model=face_landmarker.task (MediaPipe)"
                )
            source_landmarks = extract_landmarks(landmarks_model, source[None], "the source")
        rng_noise, rng_id = jax.random.split(jax.random.PRNGKey(seed))
        if self.driver is Driver.AUDIO:
            points = self._speech_points(driving, source_landmarks, rng_id, what)
        else:
            driving = np.asarray(driving)
            if driving_landmarks is None:
                if not landmarks_model:
                    raise AnimationError(
                        f"{what}: AniPortrait needs the driving video's landmarks: "
                        "--driving_landmarks=FILE.npz or --landmarks_model=face_landmarker.task"
                    )
                driving_landmarks = extract_landmarks(landmarks_model, driving, what)
            if len(_points(driving_landmarks, what)) < len(driving):
                raise AnimationError(f"{what}: fewer landmark rows than the video's frames")
            cut = {k: np.asarray(v)[: len(driving)] for k, v in driving_landmarks.items()}
            points = transfer_motion(source_landmarks, cut, what)
        drawings = self.draw(points)
        reference_drawing = self.draw(_points(source_landmarks, "source")[:1])[0]
        latents = self._sample(
            self.variables, source, reference_drawing, drawings, rng_noise, ddim=ddim
        )
        return {**state, "latents": latents}, np.arange(len(drawings))

    def _speech_points(self, wav, source: Mapping, rng, what: str) -> np.ndarray:
        if not _has_3d(source):
            raise AnimationError(
                "speech needs the source's face_mesh and head_pose (a --source_landmarks file "
                "with them; MediaPipe extraction gives 2-D points only)"
            )
        wav = np.asarray(wav, np.float32).reshape(-1)
        frames = int(np.ceil(len(wav) / SAMPLE_RATE * SPEECH_FPS))  # prepare_audio_feature
        if frames < 1 or not np.isfinite(wav).all() or np.abs(wav).max() < 1e-4:
            raise AnimationError(f"{what}: the speech is silent or shorter than one frame")
        ids = min(NUM_IDS, self.audio_models["pose"][0].num_ids)
        identity = jax.random.randint(rng, (1,), 0, ids)
        variables = {k: v for k, (_, v) in self.audio_models.items()}
        offsets, poses = self._speech(
            variables, normalize_speech(wav), identity, frames, chunks=tuple(pose_chunks(frames))
        )
        poses = np.asarray(poses, np.float64)
        poses[:, :3] *= POSE_ANGLE_SCALE
        pose = speech_poses(smooth(poses, 7), np.asarray(source["head_pose"], np.float64)[0])
        mesh = np.asarray(offsets, np.float64) + np.asarray(source["face_mesh"], np.float64)[0]
        return face_mesh.project(mesh.reshape(frames, face_mesh.NUM_VERTICES, 3), pose)

    def drive(self, state, steps: np.ndarray):
        vae = {"vae": self.variables["vae"]} if "vae" in self.variables else {}
        return self._decode(vae, state["latents"][:, jnp.asarray(steps)])


# What this module drives (jaxtalk/discovery.py): release weights and training runs.
ANIMATORS = {KIND: AniPortraitAnimator}

__all__ = [
    "ANIMATORS",
    "AniPortraitAnimator",
    "Sampling",
    "extract_landmarks",
    "read_landmarks",
    "transfer_motion",
]
