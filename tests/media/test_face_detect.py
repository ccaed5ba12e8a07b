"""The bundled face detector on a real photograph (scikit-image's astronaut, shipped inside
the scikit-image wheel), its square crop, its error, and `jaxtalk animate --crop_face`."""

import sys

import numpy as np
import pytest
from PIL import Image

from jaxtalk.media import crop, face_detect
from jaxtalk.media.probe import probe
from jaxtalk.media.video import read_video, write_video
from tests import cli_processes
from tests.tasks import helpers
from tests.train.helpers import REPO, cli_env

# Eileen Collins' eyes and mouth in the 512x512 astronaut image (x0, y0, x1, y1): eyes at
# about (204, 101) and (246, 103), mouth corners at (204, 140) and (244, 142).
EYES_AND_MOUTH = (198, 95, 250, 148)
# The face from ear to ear and hairline to chin.
FACE = (178, 70, 275, 178)


@pytest.fixture(scope="module")
def astronaut():
    data = pytest.importorskip("skimage.data")
    image = data.astronaut()  # bundled in the wheel: no download
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8
    return image


def _inside(inner, outer) -> bool:
    return (
        outer[0] <= inner[0]
        and outer[1] <= inner[1]
        and inner[2] <= outer[2]
        and inner[3] <= outer[3]
    )


def _check_square(box, width, height):
    x, y, w, h = box
    assert w == h > 0
    assert 0 <= x and 0 <= y and x + w <= width and y + h <= height


def test_the_detected_face_lies_on_the_face(astronaut):
    boxes = face_detect.detect_faces(astronaut)
    assert len(boxes) == 1
    box = face_detect.face_box(astronaut)
    assert _inside(EYES_AND_MOUTH, box)  # covers eyes and mouth
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    assert FACE[0] < centre[0] < FACE[2] and FACE[1] < centre[1] < FACE[3]
    assert 60 < box[2] - box[0] < 160  # a face, not the whole portrait


def test_the_crop_is_the_preparation_crop_of_the_face(astronaut):
    box, image = face_detect.crop_face(astronaut, 64, what="astronaut.png")
    _check_square(box, 512, 512)
    assert box == crop.clip_box(
        face_detect.face_box(astronaut)[None], 512, 512, face_detect.CROP_SCALE
    )
    x, y, side, _ = box
    assert _inside(FACE, (x, y, x + side, y + side))  # the whole face is in the crop
    assert side < 300  # and it is not the whole image
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    _, full = face_detect.crop_face(astronaut, None)
    assert full.shape == (side, side, 3)
    np.testing.assert_array_equal(full, astronaut[y : y + side, x : x + side])


def test_a_face_near_the_corner_is_shifted_into_the_frame(astronaut):
    corner = astronaut[50:, 160:]  # the face ~16 px from the top-left
    box = face_detect.crop_box(corner)
    _check_square(box, corner.shape[1], corner.shape[0])
    assert box[:2] == (0, 0)  # shifted, not shrunk
    assert box[2] == round(
        face_detect.CROP_SCALE * (face_detect.face_box(corner)[2] - face_detect.face_box(corner)[0])
    )


def test_the_largest_face_wins_and_big_images_are_handled(astronaut):
    small = np.asarray(Image.fromarray(astronaut).resize((352, 352), Image.BICUBIC))
    canvas = np.full((512, 864, 3), 200, np.uint8)
    canvas[:, :512] = astronaut
    canvas[80:432, 512:] = small
    assert len(face_detect.detect_faces(canvas)) == 2
    assert _inside(EYES_AND_MOUTH, face_detect.face_box(canvas))
    big = np.asarray(Image.fromarray(astronaut).resize((2048, 2048), Image.BICUBIC))
    # detected downscaled
    assert _inside([4 * v for v in EYES_AND_MOUTH], face_detect.face_box(big))


@pytest.mark.parametrize(
    "image",
    [
        (np.random.RandomState(0).rand(240, 320, 3) * 255).astype(np.uint8),
        np.full((200, 200, 3), 128, np.uint8),
    ],
    ids=["noise", "uniform"],
)
def test_no_face_is_a_clear_error_naming_the_file(image):
    with pytest.raises(face_detect.NoFaceError, match=r"^noise\.png: no face found.*--nocrop_face"):
        face_detect.crop_face(image, 64, what="noise.png")


def test_the_cascade_is_loaded_once():
    frontal = face_detect._cascade(face_detect.FRONTAL)
    assert face_detect._cascade(face_detect.FRONTAL) is frontal
    assert face_detect._cascade(face_detect.PROFILE) is not frontal


@pytest.fixture(scope="module")
def files(tmp_path_factory, astronaut):
    d = tmp_path_factory.mktemp("animate_face")
    Image.fromarray(astronaut).save(d / "astronaut.png")
    Image.fromarray((np.random.RandomState(1).rand(96, 128, 3) * 255).astype(np.uint8)).save(
        d / "noise.png"
    )
    driving = np.random.RandomState(2).randint(0, 256, (6, 48, 48, 3)).astype(np.uint8)
    write_video(d / "driving.mp4", driving, 25.0)
    return {"dir": d, "stage1": helpers.save_stage1(str(d / "s1.safetensors"))}


def _animate(files, source, *extra):
    cmd = [
        sys.executable,
        "-m",
        "jaxtalk.cli",
        "animate",
        "--mode=video",
        f"--source={files['dir'] / source}",
        f"--driving={files['dir'] / 'driving.mp4'}",
        f"--weights={files['stage1']}",
        *extra,
    ]
    return cli_processes.run(cmd, cwd=REPO, env=cli_env(), timeout=600)


def test_animate_crops_the_source_face_end_to_end(files, astronaut):
    out = files["dir"] / "out.mp4"
    proc = _animate(files, "astronaut.png", f"--out={out}")  # --crop_face is the default
    assert proc.returncode == 0, proc.stderr[-2000:]
    x, y, side, _ = face_detect.crop_box(astronaut)
    assert f"astronaut.png: face crop x={x} y={y} side={side}" in proc.stdout
    info = probe(out)
    assert (info.width, info.height) == (helpers.SIZE, helpers.SIZE)
    assert len(read_video(str(out))[0]) == 6


def test_animate_without_a_face_says_how_to_skip_detection(files):
    proc = _animate(files, "noise.png", f"--out={files['dir'] / 'x.mp4'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "noise.png: no face found" in proc.stderr and "--nocrop_face" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = _animate(files, "noise.png", f"--out={files['dir'] / 'y.mp4'}", "--nocrop_face")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "face crop" not in proc.stdout
