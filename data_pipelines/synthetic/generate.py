"""Writes the synthetic talking-head set in the VoxCeleb2 layout, so the real path runs on it.

  <out>/videos/<ytid>.mp4             the "YouTube video": 25 fps H.264 + 16 kHz AAC speech
  <out>/vox2_dev_txt.zip, vox2_test_txt.zip   official per-utterance txt (normalized boxes)
  <out>/attributes/<ytid>.npz         ground truth per video frame: pose (yaw, pitch, roll
                                      degrees), mouth (opening 0..1), blink (0..1),
                                      landmarks_xy (5 points, pixels), fps; and AniPortrait's
                                      exact MediaPipe-topology landmarks (synthetic/mesh.py):
                                      face_mesh (468 x 3, head units, pose-free), head_pose
                                      (3 angles, head centre x y and size in pixels),
                                      face_mesh_xy (478 points, pixels)
  <out>/companions/<ytid>.swapped.mp4, .styled.mp4, .masks.npz   MegActor's driving streams
                                      and background masks (synthetic/companions.py), in the
                                      companion-file format of data_pipelines/companions.py

Each video holds several utterances of one identity; utterances are what become clips.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import os
import string
import zipfile

import numpy as np

from data_pipelines import companions as companion_files
from data_pipelines.synthetic import companions, face, mesh, speech
from jaxtalk import fs
from jaxtalk.media.video import write_video

FPS = 25
SAMPLE_RATE = 16000


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    num_identities: int = 8
    videos_per_identity: int = 2
    utterances_per_video: int = 2
    utterance_seconds: float = 3.0
    resolution: int = 256  # raw video side; the face box is about half of it
    test_identities: int = 1  # the last identities go to vox2_test_txt.zip
    seed: int = 0
    # MegActor's driving-stream companions of every video (synthetic/companions.py) in
    # <out>/companions; False skips them (they double the CPU time of a default prepare:
    # 38 s -> 76 s, and add half to the tests' tiny set's: 8 s -> 12 s).
    companions: bool = True


def _smooth_track(rng, n, amplitude, freqs=(0.05, 0.4), parts=3):
    t = np.arange(n) / FPS
    out = np.zeros(n)
    for _ in range(parts):
        out += rng.uniform(0.3, 1.0) * np.sin(
            2 * np.pi * rng.uniform(*freqs) * t + rng.uniform(0, 2 * np.pi)
        )
    return amplitude * out / parts


def _blinks(rng, n):
    blink = np.zeros(n, np.float32)
    t = rng.uniform(0.5, 2.0)
    while t * FPS < n:
        k = int(t * FPS)
        for j, v in enumerate((0.5, 1.0, 1.0, 0.5)):
            if k + j < n:
                blink[k + j] = v
        t += rng.uniform(1.5, 4.0)
    return blink


def youtube_id(rng) -> str:
    alphabet = string.ascii_letters + string.digits + "-_"
    return "".join(rng.choice(list(alphabet), 11))


@dataclasses.dataclass(frozen=True)
class Motion:
    """One video's per-frame tracks: everything the renderer draws besides the identity."""

    yaw: np.ndarray
    pitch: np.ndarray
    roll: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    size: np.ndarray
    mouth: np.ndarray
    blink: np.ndarray

    def frame(self, i: int) -> tuple:
        """The renderer's arguments for frame i (pose, centre, size, mouth, blink)."""
        return tuple(float(getattr(self, f.name)[i]) for f in dataclasses.fields(self))


def _motion(ident: face.Identity, num_frames: int, rng: np.random.Generator):
    """Speech audio and the motion that goes with it."""
    audio, env, openness = speech.synthesize(num_frames / FPS, ident.pitch_hz, rng, SAMPLE_RATE)
    mouth = speech.mouth_per_frame(env, openness, FPS, SAMPLE_RATE)[:num_frames]
    # Head motion of the size seen in talking-head footage (HDTF, VoxCeleb): a few degrees to
    # about 15 degrees of yaw, a little drift in position and scale.
    yaw = _smooth_track(rng, num_frames, 18)
    pitch = _smooth_track(rng, num_frames, 8) + 3 * mouth  # a small nod with the speech
    roll = _smooth_track(rng, num_frames, 6)
    res = ident.background.shape[0]
    cx = res / 2 + _smooth_track(rng, num_frames, 0.04 * res)
    cy = res * 0.47 + _smooth_track(rng, num_frames, 0.03 * res)
    size = res * rng.uniform(0.42, 0.52) * (1 + _smooth_track(rng, num_frames, 0.04))
    blink = _blinks(rng, num_frames)
    return audio, Motion(yaw, pitch, roll, cx, cy, size, mouth, blink)


def _render(ident: face.Identity, num_frames: int, rng: np.random.Generator, masks: bool):
    """render_video's outputs plus the motion and, with `masks`, background masks [N, H, W]."""
    audio, m = _motion(ident, num_frames, rng)
    renderer = face.Renderer(ident)
    frames, boxes, landmarks, bg = [], [], [], []
    for i in range(num_frames):
        out = renderer.render(*m.frame(i), mask=masks)
        frames.append(out[0])
        boxes.append(out[1])
        if masks:
            bg.append(out[2])
        landmarks.append(renderer.landmarks(*m.frame(i)[:6]))
    truth = {
        "fps": np.float32(FPS),
        "pose": np.stack([m.yaw, m.pitch, m.roll], 1).astype(np.float32),
        "mouth": m.mouth[:, None],
        "blink": m.blink[:, None],
        "landmarks_xy": np.stack(landmarks),
        **mesh.video_attributes(
            ident, m.yaw, m.pitch, m.roll, m.cx, m.cy, m.size, m.mouth, m.blink
        ),
    }
    audio = audio[: num_frames * SAMPLE_RATE // FPS]
    return np.stack(frames), audio, np.stack(boxes), truth, m, (np.stack(bg) if masks else None)


def render_video(ident: face.Identity, num_frames: int, rng: np.random.Generator):
    """Frames, audio and per-frame ground truth for one video of `ident`."""
    return _render(ident, num_frames, rng, masks=False)[:4]


def vox2_txt(identity: str, ytid: str, frames: np.ndarray, boxes_norm: np.ndarray) -> str:
    """One utterance file in the official VoxCeleb2 txt format (tabs and trailing spaces included)."""
    lines = [
        f"Identity  : \t{identity}",
        f"Reference : \t{ytid}",
        "Offset    : \t0",
        "FV Conf   : \t17.000\t(1)",
        "ASD Conf  : \t3.000",
        "",
        "FRAME \tX \tY \tW \tH ",
    ]
    for f, (x0, y0, x1, y1) in zip(frames, boxes_norm):
        lines.append(f"{f:06d} \t{x0:.3f} \t{y0:.3f} \t{x1 - x0:.3f} \t{y1 - y0:.3f} ")
    return "\n".join(lines) + "\n"


def _write(path: str, frames: np.ndarray, audio: np.ndarray | None = None) -> None:
    """An mp4 written atomically (an interrupted run leaves no partial file)."""
    write_video(path + ".tmp.mp4", frames, FPS, audio=audio, audio_sample_rate=SAMPLE_RATE)
    os.replace(path + ".tmp.mp4", path)


def generate(out_dir: str, cfg: SyntheticConfig = SyntheticConfig(), log=print) -> dict[str, int]:
    """Writes the set (skipping videos already written: reruns are cheap); returns counts."""
    rng = np.random.default_rng(cfg.seed)
    fs.makedirs(os.path.join(out_dir, "videos"))  # a bad --out_dir: one line naming it
    fs.makedirs(os.path.join(out_dir, "attributes"))
    if cfg.companions:
        fs.makedirs(os.path.join(out_dir, "companions"))
    utt_frames = int(cfg.utterance_seconds * FPS)
    zips = {split: io.BytesIO() for split in ("dev", "test")}
    archives = {split: zipfile.ZipFile(buf, "w") for split, buf in zips.items()}
    counts = {"identities": cfg.num_identities, "videos": 0, "utterances": 0}
    splits = [
        "test" if i >= cfg.num_identities - cfg.test_identities else "dev"
        for i in range(cfg.num_identities)
    ]
    idents, to_swap = [], []  # the swapped streams wait for their donors to exist
    # ffmpeg encodes on threads while the next video is drawn (its start-up and encoding
    # were half of the generation time)
    encoder, writes = concurrent.futures.ThreadPoolExecutor(2), []
    for i in range(cfg.num_identities):
        identity = f"id{i:05d}"
        split = splits[i]
        ident = face.random_identity(rng, cfg.resolution, cfg.resolution)
        idents.append(ident)
        for _ in range(cfg.videos_per_identity):
            ytid = youtube_id(rng)
            # Utterances separated by short gaps; the video starts with a lead-in, as YouTube videos do.
            lead = int(rng.integers(5, 30))
            gaps = rng.integers(3, 15, cfg.utterances_per_video)
            num_frames = lead + int(gaps.sum()) + cfg.utterances_per_video * utt_frames + 5
            video_seed = rng.integers(2**31)
            video_path = os.path.join(out_dir, "videos", f"{ytid}.mp4")
            truth_path = os.path.join(out_dir, "attributes", f"{ytid}.npz")
            frames, audio, boxes, truth, motion, masks = _render(
                ident, num_frames, np.random.default_rng(video_seed), masks=cfg.companions
            )
            if not (os.path.exists(video_path) and os.path.exists(truth_path)):
                writes.append(encoder.submit(_write, video_path, frames, audio))
                np.savez(truth_path, **truth)
            if cfg.companions:
                stem = os.path.join(out_dir, "companions", ytid)
                styled = stem + companion_files.SUFFIXES["styled"]
                if not os.path.exists(styled):
                    writes.append(encoder.submit(_write, styled, companions.stylise(frames)))
                if not os.path.exists(stem + companion_files.SUFFIXES["background_mask"]):
                    companion_files.write_masks(
                        stem + companion_files.SUFFIXES["background_mask"], masks, FPS
                    )
                to_swap.append((i, stem + companion_files.SUFFIXES["swapped"], motion))
            counts["videos"] += 1
            boxes_norm = boxes / cfg.resolution
            start = lead
            for u in range(cfg.utterances_per_video):
                idx = np.arange(start, start + utt_frames)
                archives[split].writestr(
                    f"txt/{identity}/{ytid}/{u + 1:05d}.txt",
                    vox2_txt(identity, ytid, idx, boxes_norm[idx]),
                )
                counts["utterances"] += 1
                start += utt_frames + int(gaps[u])
        log(f"  synthetic identity {i + 1}/{cfg.num_identities} ({split})")
    donors = companions.donors(splits)
    for i, path, motion in to_swap:
        if not os.path.exists(path):
            renderer = face.Renderer(face.swap_face(idents[i], idents[donors[i]]))
            n = len(motion.yaw)
            frames = np.stack([renderer.render(*motion.frame(k))[0] for k in range(n)])
            writes.append(encoder.submit(_write, path, frames))
    for w in writes:
        w.result()  # an encoding error surfaces here
    encoder.shutdown()
    for split, archive in archives.items():
        archive.close()
        with open(os.path.join(out_dir, f"vox2_{split}_txt.zip"), "wb") as f:
            f.write(zips[split].getvalue())
    return counts
