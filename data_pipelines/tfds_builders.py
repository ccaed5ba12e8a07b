"""tensorflow-datasets builders over the same parsers and clip processing (no TensorFlow needed).

    tfds build data_pipelines/tfds_builders.py --datasets=jaxtalk_voxceleb2/256 \
        --manual_dir=/data/vox2 --file_format=array_record
    # or: tfds.builder("jaxtalk_hdtf/512", data_dir=..., file_format="array_record").download_and_prepare(
    #        download_config=tfds.download.DownloadConfig(manual_dir=...))

Each example holds the clip record exactly as `jaxtalk prepare` stores it (`record`:
msgpack bytes, decode with `data_pipelines.records.unpack`) plus searchable columns.
Rejected clips are skipped (tfds has no place for the counts: they are logged). Read
the output with `tfds.data_source(...)` (TensorFlow-free); the grain loaders in
`loaders.py` read the `jaxtalk prepare` layout, which also carries the resumable shard
markers and rejection counts.
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import datasets
from data_pipelines.process import ClipRejected, ProcessConfig, process_clip


class _ClipBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base: subclasses set DATASET (a key of datasets.DATASETS)."""

  DATASET = ""
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=str(s), description=f"{s}x{s} crops") for s in (256, 512, 64)]
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Put the official metadata and videos in manual_dir, laid out as in " \
                                 "data_pipelines/parsers/<dataset>.py describes."

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        "clip_id": tfds.features.Text(), "identity": tfds.features.Text(),
        "num_frames": tfds.features.Scalar(np.int32),
        "record": tfds.features.Tensor(shape=(), dtype=np.object_),
    }), supervised_keys=None)

  def _split_generators(self, dl_manager):
    ds = datasets.DATASETS[self.DATASET]
    specs, report = ds.parse(str(dl_manager.manual_dir))
    logging.info("%s: %s", self.DATASET, report.summary())
    identities = {ident: i for i, ident in enumerate(sorted({s.identity for s in specs}))}
    cfg = ProcessConfig(size=int(self.builder_config.name), filters=ds.filters)
    splits = sorted({s.split for s in specs})
    return {split: self._generate_examples([s for s in specs if s.split == split], cfg, identities)
            for split in splits}

  def _generate_examples(self, specs, cfg, identities):
    for spec in specs:
      try:
        record = process_clip(spec, cfg)
      except ClipRejected as e:
        logging.info("skipped %s: %s", spec.clip_id, e)
        continue
      record.identity_index = identities[spec.identity]
      yield spec.clip_id, {"clip_id": spec.clip_id, "identity": spec.identity,
                           "num_frames": record.num_frames, "record": record.to_bytes(cfg.jpeg_quality)}


class JaxtalkVoxceleb1(_ClipBuilder):
  DATASET = "voxceleb1"


class JaxtalkVoxceleb2(_ClipBuilder):
  DATASET = "voxceleb2"


class JaxtalkHdtf(_ClipBuilder):
  DATASET = "hdtf"


class JaxtalkVfhq(_ClipBuilder):
  DATASET = "vfhq"


class JaxtalkCelebvhq(_ClipBuilder):
  DATASET = "celebvhq"


class JaxtalkSynthetic(_ClipBuilder):
  """The synthetic set: manual_dir is a raw set written by synthetic.generate.generate."""
  DATASET = "synthetic"
