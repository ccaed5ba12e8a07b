"""Videos with rotation metadata (phone videos) decode upright, at the size probe reports."""

import subprocess

import numpy as np
import pytest

from jaxtalk.media.ffmpeg_run import ffmpeg_exe
from jaxtalk.media.probe import probe
from jaxtalk.media.video import read_video

H, W = 32, 48


def _pattern():
    """Four coloured quadrants: every rotation and flip of it is a different image."""
    img = np.zeros((H, W, 3), np.uint8)
    img[: H // 2, : W // 2] = (255, 0, 0)
    img[: H // 2, W // 2 :] = (0, 255, 0)
    img[H // 2 :, : W // 2] = (0, 0, 255)
    img[H // 2 :, W // 2 :] = 255
    return img


def _run(*args, data=None):
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args], input=data, check=True)


@pytest.fixture(scope="module")
def upright(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("rot") / "upright.mp4")
    frames = np.stack([_pattern()] * 3)
    # yuv444p: no chroma subsampling, so the turned decode matches the pattern exactly.
    _run("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}", "-r", "25", "-i", "pipe:",
         "-c:v", "libx264", "-pix_fmt", "yuv444p", "-qp", "0", path, data=frames.tobytes())  # fmt: skip
    return path


def _rotated(upright, ccw):
    """A copy of `upright` whose display matrix turns it `ccw` degrees counterclockwise, and
    the rotations probe may rightly report for it."""
    out = upright.replace("upright", f"ccw{ccw}")
    try:  # ffmpeg >= 6: -display_rotation, counterclockwise by definition
        _run("-display_rotation", str(ccw), "-i", upright, "-c", "copy", out)
        return out, {ccw}
    except subprocess.CalledProcessError:
        # Older ffmpeg: the rotate tag, whose sense the muxers did not always agree on (5.1
        # writes it counterclockwise); the decode below still pins the orientation down.
        _run("-i", upright, "-c", "copy", "-metadata:s:v", f"rotate={ccw}", out)
        return out, {ccw, (360 - ccw) % 360}


@pytest.mark.parametrize("ccw", [90, 180, 270])
def test_rotated_video_probes_displayed_size_and_decodes_upright(upright, ccw):
    base, _ = read_video(upright)
    np.testing.assert_allclose(base[0], _pattern(), atol=3)
    path, possible = _rotated(upright, ccw)
    info = probe(path)
    assert info.rotation in possible
    expected = np.rot90(base, info.rotation // 90, axes=(1, 2))
    assert (info.height, info.width) == expected.shape[1:3]
    frames, _ = read_video(path)
    assert frames.shape == expected.shape
    np.testing.assert_allclose(frames, expected, atol=3)  # oriented as displayed, not scrambled
    for wrong in {0, 1, 2, 3} - {info.rotation // 90}:
        if np.rot90(base, wrong, axes=(1, 2)).shape == frames.shape:
            assert np.abs(frames - np.rot90(base, wrong, axes=(1, 2)).astype(int)).mean() > 50


def test_crop_and_resize_are_in_displayed_pixels(upright):
    path, _ = _rotated(upright, 90)
    turned = np.rot90(_pattern(), probe(path).rotation // 90)  # 48 high, 32 wide
    frames, _ = read_video(path, crop=(0, 0, 16, 24), size=(8, 12))
    assert frames.shape == (3, 12, 8, 3)
    np.testing.assert_allclose(frames[0].mean((0, 1)), turned[:24, :16].mean((0, 1)), atol=4)


def test_unrotated_video_reports_no_rotation(upright):
    info = probe(upright)
    assert (info.rotation, info.width, info.height) == (0, W, H)


@pytest.mark.parametrize(
    "line, ccw",
    [
        ("      displaymatrix: rotation of -90.00 degrees", 270),  # ffmpeg 5-8
        ("      Display Matrix: rotation of 90.00 degrees", 90),  # ffmpeg 9
        ("      rotate          : 90", 270),  # the older tag, clockwise
        ("      Display Matrix: rotation of 45.00 degrees", 0),  # not a right angle
    ],
)
def test_rotation_lines_of_each_ffmpeg_version(line, ccw):
    from jaxtalk.media.probe import _rotation

    assert _rotation([line]) == ccw
