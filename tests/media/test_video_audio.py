"""jaxtalk.media probe / video / audio / ffmpeg_run on small generated files."""

import subprocess

import numpy as np
import pytest

from jaxtalk.media import ffmpeg_run
from jaxtalk.media.audio import read_audio, write_wav
from jaxtalk.media.ffmpeg_run import MediaError
from jaxtalk.media.probe import probe
from jaxtalk.media.video import read_video, write_video
from tests.data_pipelines import helpers


def test_roundtrip_with_audio_crop_resize_and_alignment(tmp_path):
    path = str(tmp_path / "m.mp4")
    helpers.marker_video(path, seconds=2.0, fps=30.0, width=80, height=60)
    info = probe(path)
    assert (info.width, info.height, info.fps, info.audio_sample_rate) == (80, 60, 30.0, 16000)
    assert info.duration == pytest.approx(2.0, abs=0.1)
    frames, fps = read_video(path, fps=25, start=0.4, duration=1.2, crop=(10, 5, 40, 40), size=16)
    assert frames.shape == (30, 16, 16, 3) and frames.dtype == np.uint8 and fps == 25
    audio = read_audio(path, 16000, start=0.4, duration=1.2)
    assert audio.dtype == np.float32 and len(audio) == pytest.approx(19200, abs=64)
    helpers.assert_aligned(frames, np.pad(audio, (0, 640)))


def test_read_audio_resamples_any_rate(tmp_path):
    wav = str(tmp_path / "a.wav")
    t = np.arange(48000) / 48000
    write_wav(wav, 0.5 * np.sin(2 * np.pi * 1000 * t), 48000)
    out = read_audio(wav, 16000)
    assert len(out) == 16000
    spectrum = np.abs(np.fft.rfft(out))
    assert np.argmax(spectrum) == pytest.approx(1000, abs=2)  # 1 Hz bins over 1 s


def test_errors_name_the_file(tmp_path):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00not a video" * 50)
    with pytest.raises(MediaError, match="corrupt.mp4"):
        read_video(bad)
    with pytest.raises(MediaError, match="no such file"):
        probe(tmp_path / "missing.mp4")
    silent = str(tmp_path / "silent.mp4")
    write_video(silent, np.zeros((5, 16, 16, 3), np.uint8), 25)
    with pytest.raises(MediaError, match="silent.mp4: has no audio"):
        read_audio(silent)


def test_probe_runs_ffmpeg_once_per_version_of_a_file(tmp_path, monkeypatch):
    calls = []
    run = subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda args, **kw: calls.append(args) or run(args, **kw))
    path = tmp_path / "v.mp4"
    write_video(path, np.zeros((5, 16, 16, 3), np.uint8), 25)
    assert probe(path) == probe(str(path)) and len(calls) == 1  # asked again: remembered
    write_video(path, np.zeros((5, 32, 24, 3), np.uint8), 25)  # replaced: probed again
    assert (probe(path).width, probe(path).height) == (24, 32) and len(calls) == 2
    path.write_bytes(b"\x00not a video" * 50)
    for _ in range(2):  # a failure is not remembered
        with pytest.raises(MediaError, match="v.mp4: not a readable media file"):
            probe(path)
    assert len(calls) == 4


def test_falls_back_to_imageio_ffmpeg(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no system ffmpeg, no ffprobe
    monkeypatch.delenv("JAXTALK_FFMPEG", raising=False)
    ffmpeg_run.ffmpeg_exe.cache_clear()
    try:
        exe = ffmpeg_run.ffmpeg_exe()
        assert "imageio_ffmpeg" in exe
        path = str(tmp_path / "v.mp4")
        write_video(
            path, np.full((4, 16, 16, 3), 100, np.uint8), 25, audio=np.zeros(2560, np.float32)
        )
        assert probe(path).has_audio
    finally:
        ffmpeg_run.ffmpeg_exe.cache_clear()
