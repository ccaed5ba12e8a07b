"""The tfds builder path: array_record output readable without TensorFlow."""

import sys

import pytest
import tensorflow_datasets as tfds

from data_pipelines import records
from data_pipelines.synthetic import generate


def test_tfds_builder_on_synthetic(tmp_path):
  pytest.importorskip("data_pipelines.tfds_builders")
  from data_pipelines import tfds_builders  # pylint: disable=import-outside-toplevel
  raw = str(tmp_path / "raw")
  generate.generate(raw, generate.SyntheticConfig(num_identities=2, videos_per_identity=1, utterances_per_video=1,
                                                  utterance_seconds=1.2, resolution=96), log=lambda *_: None)
  builder = tfds_builders.JaxtalkSynthetic(config="64", data_dir=str(tmp_path / "tfds"), file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=raw))
  source = builder.as_data_source()
  assert sorted(source) == ["test", "train"] and len(source["train"]) == 1
  example = source["train"][0]
  rec = records.unpack(example["record"])
  assert rec["num_frames"] == example["num_frames"] == 30 and len(rec["audio"]) == 30 * 640
  assert records.decode_jpeg(rec["frames"][0]).shape == (64, 64, 3)
  assert "tensorflow" not in sys.modules  # no TensorFlow was needed
