"""Installs jaxtalk, its data pipelines and configs, and the `jaxtalk` console script."""

import re

from setuptools import find_packages, setup

# One version: jaxtalk/__init__.py's; `jaxtalk --version` reads it back from the metadata.
with open("jaxtalk/__init__.py", encoding="utf-8") as f:
    VERSION = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)

# Ranges are the ones the test suite runs on (see .ci/run); the upper bounds guard
# against API breaks in the fast-moving JAX stack.
INSTALL_REQUIRES = [
    "jax>=0.10,<0.13",
    "flax>=0.12,<0.13",
    "optax>=0.2.6,<0.3",
    "orbax-checkpoint>=0.12,<0.13",
    "grain>=0.2.15,<0.3",
    "array-record>=0.8,<0.9",
    "ml-collections>=1.1,<1.2",
    "ffmpeg-python>=0.2,<0.3",
    "imageio-ffmpeg>=0.6,<0.9",  # a static ffmpeg when the system has none
    "absl-py>=2.1,<3",
    "numpy>=2.0,<2.5",
    "scipy>=1.13,<2",
    "pillow>=10,<14",
    # Haar face cascades for user portraits at inference (jaxtalk/media/face_detect.py):
    # the XML files ship in the wheel; 4.10 is the first built for numpy 2, OpenCV 5 wheels
    # no longer carry the cascades.
    "opencv-python-headless>=4.10,<5",
    "simplejpeg>=1.9,<2",  # libjpeg-turbo decode for the loaders, ~2x PIL; decodes into a given buffer
    "flatbuffers>=24,<26",  # jax.export serialization (exported inference functions)
    "safetensors>=0.4,<0.9",
    "tensorboardX>=2.6,<2.7",
    "tqdm>=4.66,<5",
    "matplotlib>=3.8,<4",
    # gs:// work and data directories (jaxtalk/fs.py reaches them through etils.epath ->
    # fsspec -> gcsfs; orbax writes checkpoint arrays with tensorstore's own GCS driver).
    "gcsfs>=2025.3",
]

# The tfds builders (data_pipelines/tfds_builders.py) and reading their builds: optional,
# tensorflow-datasets pulls ~200 MB of dependencies that `jaxtalk prepare` does not need.
# TensorFlow itself is never required: the builders and readers run TensorFlow-free.
TFDS = [
    "tensorflow-datasets>=4.9.9,<4.10",
    "importlib-resources>=6,<7",  # tfds builders import it without TensorFlow
]

# `jaxtalk app` (jaxtalk/app/): the web page. Gradio 6: the theme and footer go to launch().
APP = ["gradio>=6,<7"]

# `jaxtalk prepare --landmarks_model` (data_pipelines/landmarks.py): MediaPipe's face
# landmarker for AniPortrait's data. mediapipe pulls opencv-contrib-python, another wheel of
# the cv2 module: kept on 4.x here so the Haar cascades (face_detect.py) stay.
MEDIAPIPE = ["mediapipe>=0.10.14,<2", "opencv-contrib-python>=4.10,<5"]

EXTRAS = {
    "tfds": TFDS,
    "mediapipe": MEDIAPIPE,
    "app": APP,
    "dev": TFDS
    + APP
    + [
        "pytest>=8,<10",
        "pytest-xdist>=3.5,<4",
        "scikit-image>=0.24,<0.27",
        # ONNX import (jaxtalk/convert/onnx_graph.py) and export (jaxtalk/export/onnx_export.py),
        # both checked against ONNX Runtime
        "onnx>=1.17,<2",
        "onnxruntime>=1.20,<2",
        "ruff>=0.17,<0.18",  # the formatter and linter CI runs (ruff.toml)
        # a Cloud Storage JSON-API server on localhost for the remote tests (tests/remote/)
        "gcp-storage-emulator>=2026.7,<2027",  # tests/remote/gcs_emulator_server.py wraps a handler
        # drives headless Chromium (Debian's chromium + chromium-driver, installed by .ci/run)
        # through the web app in tests/test_app_browser.py
        "selenium>=4.20,<5",
        # JAX compresses the test suite's compilation cache entries (tests/conftest.py) with
        # zstd when this is installed, zlib otherwise (zlib compression was ~13 s of a
        # profiled suite run)
        "zstandard>=0.23,<1",
    ],
    # Only for running the released PyTorch code beside jaxtalk (parity checks,
    # benchmarks); jaxtalk itself reads and writes PyTorch checkpoints without torch.
    "torch": ["torch>=2.4"],
    # Apache Beam for the tfds builders (data_pipelines/tfds_builders.py), tested with 2.77.
    # Not in "dev": apache-beam 2.77 caps protobuf<7, pyarrow<26, pillow<13, python-dateutil<3,
    # so installing it downgrades those from what the rest of the stack resolves to; the Beam
    # test skips without it. "dataflow" adds the Google Cloud clients for the DataflowRunner.
    "beam": ["apache-beam>=2.77,<3"],
    "dataflow": ["apache-beam[gcp]>=2.77,<3"],
    # `jaxtalk export --format=onnx` (jaxtalk/export/onnx_export.py; opset 18) and its check
    "onnx": ["onnx>=1.17,<2", "onnxruntime>=1.20,<2"],
    "cuda": ["jax[cuda12]>=0.10,<0.13"],
    "tpu": ["jax[tpu]>=0.10,<0.13"],
}

setup(
    name="jaxtalk",
    version=VERSION,
    description="Train talking-face and portrait-animation models in JAX/Flax at TPU/GPU scale",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    license_files=["LICENSE", "NOTICE"],
    python_requires=">=3.11",
    packages=find_packages(
        include=[
            "jaxtalk",
            "jaxtalk.*",
            "data_pipelines",
            "data_pipelines.*",
            "configs",
            "configs.*",
        ]
    ),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["jaxtalk=jaxtalk.cli:main"]},
)
