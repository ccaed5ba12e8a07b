"""Every command on bad inputs: one line `jaxtalk <cmd>: error: ...` naming the file, flag or
key at fault, a non-zero exit and no traceback (issue 13).

Each case is ARGS (with {placeholders} for the fixture files below) and the text the error
line must contain. The fixtures are tiny: the toy family's 8x8 weights and a two-step
toy_regression run, so each case costs one CLI start.
"""

import flax.linen as nn
import jax
import numpy as np
import pytest
from PIL import Image

from jaxtalk.convert import weights
from jaxtalk.media.audio import write_wav
from jaxtalk.media.video import write_video
from tests.tasks.helpers import shared_synthetic
from tests.test_cli import jaxtalk
from tests.test_toy_family import PLUGIN, _released_checkpoint
from tests.toy_family.model import ToyPortrait
from tests.train.helpers import run_cli, train_command


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_inputs")
    rng = np.random.default_rng(0)
    x = np.zeros((1, 8, 8, 3), np.float32)
    params = nn.meta.unbox(ToyPortrait().init(jax.random.PRNGKey(0), x, x)["params"])
    config = {"kind": "toy_portrait", "features": 8}
    weights.save({"params": params, "model_config": config}, d / "toy.safetensors", "toy_portrait")
    _released_checkpoint(d / "toy.pt")
    write_video(d / "driving.mp4", rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8), 25.0)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(d / "face.png")
    write_wav(d / "speech.wav", rng.uniform(-0.5, 0.5, 8000).astype(np.float32))
    (d / "random.mp4").write_bytes(rng.bytes(4096))
    (d / "garbage.bin").write_bytes(rng.bytes(4096))
    (d / "notes.txt").write_text("not a video, an image, audio or weights\n")
    (d / "syntax.py").write_text("def get_config(arg):\n    return {\n")
    (d / "raises.py").write_text("def get_config(arg):\n    raise RuntimeError('no such recipe')\n")
    (d / "empty").mkdir()
    (d / "manual").mkdir()
    (d / "data").symlink_to(shared_synthetic(tmp_path_factory))  # a real test set, read only
    run_cli(train_command(d / "run", "--config.total_steps=2", "--config.checkpoint.every_steps=2"))
    return d


def case(id_, command, args, names, *marks):
    return pytest.param(command, args, names, id=id_, marks=marks)


CASES = [
    # --------------------------------------------------------------------------- train
    case("train-config-missing", "train", "--config={d}/none.py:tiny --workdir={d}/r", "none.py"),
    case("train-config-syntax", "train", "--config={d}/syntax.py:tiny --workdir={d}/r", "syntax"),
    case("train-config-raises", "train", "--config={d}/raises.py:tiny --workdir={d}/r", "raises"),
    case("train-unknown-key", "train", "--config={toy} --workdir={d}/r --config.bs=4", "bs"),
    case(
        "train-wrong-type",
        "train",
        "--config={toy} --workdir={d}/r --config.batch_size=abc",
        "batch_size",
    ),
    case("train-no-workdir", "train", "--config={toy}", "--workdir"),
    case(
        "train-workdir-under-file", "train", "--config={toy} --workdir=/dev/null/r", "/dev/null/r"
    ),
    case(
        "train-workdir-is-file",
        "train",
        "--config={toy} --workdir={d}/notes.txt",
        "notes.txt",
    ),
    case(
        "train-data_dir-missing",
        "train",
        "--config=anitalker_stage1:tiny --workdir={d}/r1 --config.data.data_dir={d}/nodata",
        "nodata",
    ),
    # --------------------------------------------------------------------------- prepare
    case("prepare-unknown-dataset", "prepare", "nope --out_dir={d}/p", "nope"),
    case("prepare-no-out_dir", "prepare", "synthetic", "--out_dir"),
    case(
        "prepare-manual_dir-missing",
        "prepare",
        "voxceleb2 --manual_dir={d}/none --out_dir={d}/p",
        "none",
    ),
    case(
        "prepare-no-manual_dir",
        "prepare",
        "hdtf --out_dir={d}/p",
        "--manual_dir",
    ),
    case(
        "prepare-empty-manual_dir",
        "prepare",
        "voxceleb1 --manual_dir={d}/manual --out_dir={d}/p",
        "manual",
    ),
    case(
        "prepare-test_list-missing",
        "prepare",
        "hdtf --manual_dir={d}/manual --out_dir={d}/p --test_list={d}/none.txt",
        "none.txt",
    ),
    case(
        "prepare-out_dir-under-file",
        "prepare",
        "synthetic --out_dir={d}/notes.txt/p --num_identities=2",
        "notes.txt",
    ),
    # --------------------------------------------------------------------------- import
    case("import-no-checkpoint", "import", "--release=toy_portrait", "--checkpoint"),
    case("import-unknown-release", "import", "--release=nope --checkpoint={d}/toy.pt", "nope"),
    case(
        "import-no-backbone",
        "import",
        "--release=lpips_alex --checkpoint={d}/toy.pt --out={d}/i.safetensors",
        "--backbone",
    ),
    case(
        "import-extra-backbone",
        "import",
        "--release=toy_portrait --checkpoint={d}/toy.pt --backbone={d}/toy.pt",
        "--backbone",
    ),
    case(
        "import-another-models-checkpoint",
        "import",
        "--release=anitalker_stage2 --checkpoint={d}/toy.pt --out={d}/i.safetensors",
        "toy.pt",
    ),
    case(
        "import-checkpoint-missing",
        "import",
        "--release=toy_portrait --checkpoint={d}/none.pt",
        "none.pt",
    ),
    case(
        "import-checkpoint-garbage",
        "import",
        "--release=toy_portrait --checkpoint={d}/garbage.bin --out={d}/i.safetensors",
        "garbage.bin",
    ),
    case(
        "import-checkpoint-text",
        "import",
        "--release=toy_portrait --checkpoint={d}/notes.txt --out={d}/i.safetensors",
        "notes.txt",
    ),
    case(
        "import-checkpoint-is-dir",
        "import",
        "--release=toy_portrait --checkpoint={d}/empty --out={d}/i.safetensors",
        "empty",
    ),
    case(
        "import-out-under-file",
        "import",
        "--release=toy_portrait --checkpoint={d}/toy.pt --out={d}/notes.txt/w.safetensors",
        "notes.txt",
    ),
    case(
        "import-out-dev-null",
        "import",
        "--release=toy_portrait --checkpoint={d}/toy.pt --out=/dev/null/w.safetensors",
        "/dev/null/w.safetensors",
    ),
    # --------------------------------------------------------------------------- export
    case("export-no-source", "export", "--out={d}/e.safetensors", "--weights"),
    case(
        "export-weights-missing",
        "export",
        "--weights={d}/none.safetensors --out={d}/e.pt --release=toy_portrait",
        "none.safetensors",
    ),
    case(
        "export-weights-garbage",
        "export",
        "--weights={d}/garbage.bin --out={d}/e.pt --release=toy_portrait",
        "garbage.bin",
    ),
    case(
        "export-unknown-release",
        "export",
        "--weights={d}/toy.safetensors --release=nope --out={d}/e.pt",
        "nope",
    ),
    case(
        "export-out-under-file",
        "export",
        "--weights={d}/toy.safetensors --release=toy_portrait --out={d}/notes.txt/e.pt",
        "notes.txt",
    ),
    case(
        "export-workdir-no-checkpoints",
        "export",
        "--workdir={d}/empty --group=model --out={d}/e.safetensors",
        "empty",
    ),
    case(
        "export-unknown-group",
        "export",
        "--workdir={d}/run --group=nope --out={d}/e.safetensors",
        "nope",
    ),
    # --------------------------------------------------------------------------- eval
    case("eval-no-test_set", "eval", "--workdir={d}/run", "--test_set"),
    case(
        "eval-workdir-no-checkpoints",
        "eval",
        "--workdir={d}/empty --test_set=t={d}/data:test --metrics=psnr",
        "empty",
    ),
    case(
        "eval-data_dir-missing",
        "eval",
        "--workdir={d}/run --test_set=t={d}/nodata:test --metrics=psnr",
        "nodata",
    ),
    case(
        "eval-unknown-metric",
        "eval",
        "--workdir={d}/run --test_set=t={d}/data:test --metrics=nope",
        "nope",
    ),
    case(
        "eval-metric_options-not-json",
        "eval",
        "--workdir={d}/run --test_set=t={d}/data:test --metrics=psnr --metric_options={{x",
        "--metric_options",
    ),
    # --------------------------------------------------------------------------- sweep
    case("sweep-no-runs", "sweep", "--test_sets=t={d}/data:test --out_dir={d}/s", "--runs"),
    case(
        "sweep-run-no-checkpoints",
        "sweep",
        "--runs={d}/empty --test_sets=t={d}/data:test --metrics=psnr --out_dir={d}/s1",
        "empty",
    ),
    case(
        "sweep-data_dir-missing",
        "sweep",
        "--runs={d}/run --test_sets=t={d}/nodata:test --metrics=psnr --out_dir={d}/s2",
        "nodata",
    ),
    case(
        "sweep-out_dir-under-file",
        "sweep",
        "--runs={d}/run --test_sets=t={d}/data:test --metrics=psnr --out_dir={d}/notes.txt/s",
        "notes.txt",
    ),
    case("sweep-render-missing", "sweep", "--render_only --out_dir={d}/none", "none"),
    case(
        "sweep-bad-steps",
        "sweep",
        "--runs={d}/run --test_sets=t={d}/data:test --metrics=psnr --out_dir={d}/s3 --steps=x",
        "--steps",
    ),
    # --------------------------------------------------------------------------- animate
    case(
        "animate-no-driving",
        "animate",
        "{src} --weights={w} --out={o}",
        "--driving",
    ),
    case(
        "animate-weights-and-workdir",
        "animate",
        "{src} --driving={v} --weights={w} --workdir={d}/run --out={o}",
        "--weights",
    ),
    case(
        "animate-weights-missing",
        "animate",
        "{src} --driving={v} --weights={d}/none.safetensors --out={o}",
        "none.safetensors",
    ),
    case(
        "animate-weights-garbage",
        "animate",
        "{src} --driving={v} --weights={d}/garbage.bin --out={o}",
        "garbage.bin",
    ),
    case(
        "animate-workdir-no-checkpoints",
        "animate",
        "{src} --driving={v} --workdir={d}/empty --out={o}",
        "empty",
    ),
    case(
        "animate-workdir-not-animatable",
        "animate",
        "{src} --driving={v} --workdir={d}/run --out={o}",
        "toy_regression",
    ),
    case(
        "animate-driving-missing",
        "animate",
        "{src} --driving={d}/none.mp4 --weights={w} --out={o}",
        "none.mp4",
    ),
    case(
        "animate-driving-random-bytes",
        "animate",
        "{src} --driving={d}/random.mp4 --weights={w} --out={o}",
        "random.mp4",
    ),
    case(
        "animate-driving-text",
        "animate",
        "{src} --driving={d}/notes.txt --weights={w} --out={o}",
        "notes.txt",
    ),
    case(
        "animate-driving-image",
        "animate",
        "{src} --driving={d}/speech.wav --weights={w} --out={o}",
        "speech.wav",
    ),
    case(
        "animate-driving-dir",
        "animate",
        "{src} --driving={d}/empty --weights={w} --out={o}",
        "empty",
    ),
    case(
        "animate-driving_crop-outside",
        "animate",
        "{src} --driving={v} --driving_crop=0,0,99,99 --weights={w} --out={o}",
        "crop",
    ),
    case(
        "animate-driving_crop-not-numbers",
        "animate",
        "{src} --driving={v} --driving_crop=a,b,c,d --weights={w} --out={o}",
        "--driving_crop",
    ),
    case(
        "animate-source-missing",
        "animate",
        "--source={d}/none.png --nocrop_face --driving={v} --weights={w} --out={o}",
        "none.png",
    ),
    case(
        "animate-source-not-image",
        "animate",
        "--source={d}/garbage.bin --nocrop_face --driving={v} --weights={w} --out={o}",
        "garbage.bin",
    ),
    case(
        "animate-source-not-image-crop",
        "animate",
        "--source={d}/notes.txt --driving={v} --weights={w} --out={o}",
        "notes.txt",
    ),
    case(
        "animate-source-no-face",
        "animate",
        "--source={d}/face.png --driving={v} --weights={w} --out={o}",
        "face.png",
    ),
    case(
        "animate-out-dev-null",
        "animate",
        "{src} --driving={v} --weights={w} --out=/dev/null/x.mp4",
        "/dev/null/x.mp4",
    ),
    case(
        "animate-out-under-file",
        "animate",
        "{src} --driving={v} --weights={w} --out={d}/notes.txt/x.mp4",
        "notes.txt",
    ),
    case(
        "animate-out-is-dir",
        "animate",
        "{src} --driving={v} --weights={w} --out={d}/empty",
        "empty",
    ),
    case(
        "animate-audio-no-stage2",
        "animate",
        "--mode=audio {src} --audio={d}/speech.wav --out={o}",
        "--stage2",
    ),
    case(
        "animate-audio-video-weights",
        "animate",
        "--mode=audio {src} --audio={d}/speech.wav --stage2={w} --out={o}",
        "toy.safetensors",
    ),
    case(
        "animate-audio-stage2-garbage",
        "animate",
        "--mode=audio {src} --audio={d}/speech.wav --stage2={d}/garbage.bin --out={o}",
        "garbage.bin",
    ),
    case(
        "animate-weights-torch-checkpoint",
        "animate",
        "--mode=video {src} --driving={v} --weights={d}/toy.pt --out={o}",
        "toy.pt",
    ),
]


@pytest.mark.parametrize("command, args, names", CASES)
def test_a_bad_input_is_one_line_naming_it(files, command, args, names):
    values = dict(
        d=files,
        toy="toy_regression:tiny",
        w=files / "toy.safetensors",
        v=files / "driving.mp4",
        o=files / "out.mp4",
        src=f"--source={files / 'face.png'} --nocrop_face",
    )
    out = jaxtalk(command, *args.format(**values).split(), env=PLUGIN)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode != 0, out.stdout[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(f"jaxtalk {command}: error: "), out.stderr
    assert names.format(**values) in lines[0], lines[0]
