"""TalkingHead-1KH (tcwang0509/TalkingHead-1KH) metadata -> clip specs.

The release's data_list.zip holds, per list L in (train, val, small):
  L_video_ids.txt     one YouTube id per line (what videos_download.py fetches)
  L_video_tubes.txt   one face tube per line: `<piece>, H, W, S, E, L, T, R, B`
                      e.g. `--Y9imYnfBw_0000, 720, 1280, 0, 271, 504, 63, 792, 351`
<piece> = `<youtube id>_<NNNN>` is the NNNN-th one-minute piece that videos_split.sh cuts
from the download (ffmpeg segment muxer, stream copy, so pieces start at key frames and
their frame numbers are what S and E count); S..E are the tube's frames (both inclusive);
L, T, R, B its box in pixels of an H x W frame (videos_crop.py scales x by w / W and y by
h / H, which normalised boxes reproduce). The tubes files are read from `<manual_dir>/
data_list/` or `<manual_dir>/`; `val` is the evaluation set (1080p videos, the `test`
split here: LivePortrait's and face-vid2vid's self-reenactment test), `train` and `small`
(a subset of train for the release's unit test) go to `train`; a tube listed twice is
counted once ("duplicate tube").

Videos, first found wins: the release's output `<L>/cropped_clips/<piece>_S<S>_E<E>_L<L>_
T<T>_R<R>_B<B>.mp4` (or `cropped_clips/...`), already cut and cropped, used whole; else the
piece `<L>/1min_clips/<piece>.mp4` (or `1min_clips/`, `videos/`, the top level), cut to
S..E at the piece's frame rate (read once per piece from its header) and cropped with the
box. Identity: the YouTube id. The release downloads video-only streams: its clips have no
audio track.

Bad input (see `common`): a BOM is ignored; every line is one guarded entry: wrong field
count, a piece name that is not `<id>_<digits>` or a value that is not a whole number is a
"malformed line"; a value that is not finite is a "non-finite value", a negative one
"negative frame size" / "negative frame number" / "negative box coordinate"; E < S is an
"empty time range", R <= L or B <= T (or H or W zero) an "empty box". A file cut mid-line
loses that line. A piece whose header cannot be read rejects its tubes ("unreadable
video", "unknown frame rate").
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

from data_pipelines.clip_spec import ClipSpec, SkipReport
from data_pipelines.parsers import common
from jaxtalk.errors import one_line
from jaxtalk.media.ffmpeg_run import MediaError
from jaxtalk.media.probe import probe

LISTS = {"train": "train", "val": "test", "small": "train"}  # list -> split
PIECE = re.compile(r"(?P<yt>[A-Za-z0-9_\-]+)_(?P<part>\d+)")
FIELDS = (
    ("H", "frame size"),
    ("W", "frame size"),
    ("S", "frame number"),
    ("E", "frame number"),
    ("L", "box coordinate"),
    ("T", "box coordinate"),
    ("R", "box coordinate"),
    ("B", "box coordinate"),
)


@dataclasses.dataclass(frozen=True)
class Tube:
    piece: str
    youtube_id: str
    height: int
    width: int
    start: int  # first frame of the piece
    end: int  # last frame, inclusive
    box: tuple[int, int, int, int]  # L, T, R, B in pixels of the H x W frame

    @property
    def name(self) -> str:
        """The file name videos_crop.py writes for this tube (without .mp4)."""
        left, top, right, bottom = self.box
        return f"{self.piece}_S{self.start}_E{self.end}_L{left}_T{top}_R{right}_B{bottom}"


def parse_tube(line: str) -> Tube:
    """One tubes-file line -> a checked `Tube` (`common.Rejected` / ValueError if unusable)."""
    fields = [f.strip() for f in line.split(",")]
    if len(fields) != 1 + len(FIELDS):
        raise ValueError(f"{len(fields)} fields, need {1 + len(FIELDS)}")
    m = PIECE.fullmatch(fields[0])
    if m is None:
        raise ValueError(f"{one_line(fields[0], 40)!r} is not <youtube id>_<piece number>")
    h, w, s, e, left, top, right, bottom = (
        common.integer(token, what) for token, (_, what) in zip(fields[1:], FIELDS)
    )
    if e < s:
        raise common.Rejected("empty time range", f"frames {s}-{e}")
    if right <= left or bottom <= top or not h or not w:
        raise common.Rejected("empty box", f"L{left} T{top} R{right} B{bottom} of {w}x{h}")
    return Tube(fields[0], m["yt"], h, w, s, e, (left, top, right, bottom))


def _tubes_file(manual_dir: str, name: str) -> str | None:
    for sub in ("data_list", ""):
        path = os.path.join(manual_dir, sub, f"{name}_video_tubes.txt")
        if os.path.isfile(path):
            return path
    return None


class _FrameRates:
    """Frame rate of each piece, read from its header once (several tubes share a piece)."""

    def __init__(self):
        self._seen: dict[str, float | str] = {}

    def __call__(self, path: str) -> float:
        if path not in self._seen:
            try:
                fps = probe(path).fps
                self._seen[path] = fps if fps else "unknown frame rate"
            except MediaError as e:
                self._seen[path] = f"unreadable video: {one_line(e, 100)}"
        got = self._seen[path]
        if isinstance(got, str):
            reason, _, detail = got.partition(": ")
            raise common.Rejected(reason, detail or path)
        return got


def _clip_spec(
    tube: Tube, list_name: str, manual_dir: str, dataset: str, frame_rate: _FrameRates
) -> ClipSpec:
    common_fields = dict(
        clip_id=tube.name,
        dataset=dataset,
        identity=tube.youtube_id,
        split=LISTS[list_name],
        extra=(("youtube_id", tube.youtube_id), ("list", list_name)),
    )
    cropped = common.find_video(
        manual_dir, tube.name, (f"{list_name}/cropped_clips", "cropped_clips")
    )
    if cropped is not None:  # the release's own cut: the whole file, uncropped
        return ClipSpec(video_path=cropped, **common_fields)
    piece = common.find_video(
        manual_dir, tube.piece, (f"{list_name}/1min_clips", "1min_clips", "videos", "")
    )
    if piece is None:
        raise common.Rejected("missing video", f"no 1min_clips/{tube.piece}.mp4")
    fps = frame_rate(piece)
    left, top, right, bottom = tube.box
    box = np.array(
        [[left / tube.width, top / tube.height, right / tube.width, bottom / tube.height]]
    )
    return ClipSpec(
        video_path=piece,
        start_sec=tube.start / fps,
        end_sec=(tube.end + 1) / fps,
        boxes=box.astype(np.float32),
        box_ref_height=None,  # normalised: x and y scale separately, as videos_crop.py
        **common_fields,
    )


def parse(manual_dir: str, *, dataset: str = "talkinghead1kh") -> tuple[list[ClipSpec], SkipReport]:
    report, specs, seen = SkipReport(), [], set()
    found = {name: _tubes_file(manual_dir, name) for name in LISTS}
    found = {name: path for name, path in found.items() if path}
    if not found:
        raise common.MissingMetadataError(
            f"{manual_dir}: no data_list/<train|val|small>_video_tubes.txt (TalkingHead-1KH "
            "metadata: unzip the release's data_list.zip there)"
        )
    frame_rate = _FrameRates()
    for list_name, path in found.items():
        for lineno, line in enumerate(common.split_lines(common.read_text(path)), 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            tube = common.guarded(report, where, "malformed line", parse_tube, line)
            if tube is None:
                continue
            if tube.name in seen:
                report.skip("duplicate tube", where)
                continue
            seen.add(tube.name)
            spec = common.guarded(
                report, where, "malformed line", _clip_spec, tube, list_name, manual_dir,
                dataset, frame_rate,
            )  # fmt: skip
            if spec is not None:
                specs.append(spec)
    return specs, report
