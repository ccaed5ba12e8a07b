"""tensorflow-datasets builders over the same parsers and clip processing (no TensorFlow needed).

Build with `python -m data_pipelines.tfds_builders`, which is `tfds build` (tfds's own
build command, same flags) minus the TensorFlow import that tfds 4.9.10's `tfds` script
needs just to start (see `build_main`). Where TensorFlow is installed, `tfds build` works
the same when given `--imports=data_pipelines.tfds_builders` (a path to this file does
not: tfds expects one builder per file). One machine, a plain Python generator:

    python -m data_pipelines.tfds_builders jaxtalk_voxceleb2/256 \
        --manual_dir=/data/vox2 --data_dir=/data/tfds --file_format=array_record
    # or: tfds.builder("jaxtalk_hdtf/512", data_dir=..., file_format="array_record").download_and_prepare(
    #        download_config=tfds.download.DownloadConfig(manual_dir=...))

Many machines, Apache Beam (`pip install -e ".[beam]"`): add Beam pipeline options and
the clips are cut in parallel Beam workers instead:

    python -m data_pipelines.tfds_builders jaxtalk_voxceleb2/256 \
        --manual_dir=/data/vox2 --data_dir=/data/tfds --file_format=array_record \
        --beam_pipeline_options="runner=FnApiRunner,direct_num_workers=16,direct_running_mode=multi_processing"
    # One big machine: FnApiRunner (above) is the local runner. runner=DirectRunner works too, but
    # Beam 2.77 first tries its Prism runner, downloading a binary from GitHub, and falls back to
    # FnApiRunner when it cannot.
    # Dataflow (`pip install -e ".[dataflow]"`; setup_file makes the workers install jaxtalk):
    #   --beam_pipeline_options="runner=DataflowRunner,project=P,region=R,temp_location=gs://B/tmp,\
    #     setup_file=/path/to/jaxtalk/setup.py,machine_type=n2-highcpu-16,max_num_workers=64"
    # Flink / Spark (a job server of the same Beam release; IMAGE: a Beam Python SDK image with
    # jaxtalk installed):
    #   --beam_pipeline_options="runner=FlinkRunner,flink_master=HOST:8081,environment_type=DOCKER,\
    #     sdk_container_image=IMAGE"
    #   --beam_pipeline_options="runner=SparkRunner,spark_master_url=spark://HOST:7077,\
    #     environment_type=DOCKER,sdk_container_image=IMAGE"
    # In Python: DownloadConfig(manual_dir=..., beam_options=PipelineOptions([...])) or beam_runner=...

The Beam path is taken when a Beam runner or pipeline options are given (that is what
`--beam_pipeline_options` sets), or when the builder is made with `use_beam=True`
(`use_beam=False` forces the generator). Both paths call `clip_example` on each clip spec,
so they store the same examples under the same keys. On Beam, the launcher parses the
official metadata once and stages the clip specs as JSON files in the dataset's
temporary directory (a `beam.Create` of a million specs with their per-frame boxes would
not fit in a job graph); the workers read those files, reshuffle the specs across
themselves and process them. So `manual_dir` (ffmpeg opens the videos by path) and
`data_dir` (ArrayRecord writes through plain file paths) must be directories every
worker can open: the same path on a shared mount (NFS, Filestore, Lustre, GCS FUSE), and
every worker needs jaxtalk installed.

Output format: tfds 4.9.10 writes `--file_format=array_record` through Beam with its
default, deterministic writer (`BeamWriter`: examples are grouped into shards by key and
each shard is written by `ArrayRecordFileAdapter.write_examples`), so the Beam output is
the same kind of dataset as the generator's and `tfds.data_source` reads it. Its other
writer, taken with `--nondeterministic_order`, writes through `FileAdapter.beam_sink`,
which only the tfrecord adapter implements (ArrayRecord's raises NotImplementedError);
that combination is refused here with a clear message instead of failing mid-pipeline.

Each example holds the clip record exactly as `jaxtalk prepare` stores it (`record`:
msgpack bytes, decode with `data_pipelines.records.unpack`) plus searchable columns.
Rejected clips are skipped, logged and counted by reason: in Beam metrics counters
(namespace `jaxtalk`, named `<split>/rejected/<reason>` and `<split>/written`) on the Beam
path, and on both paths in the dataset's `metadata.json` (`builder.info.metadata`:
`rejected` per split and reason, null if a Beam runner reports no metrics; `parse_skipped`
by reason). Read the output with `tfds.data_source(...)` (TensorFlow-free), or train on
it: `config.data.data_dir` (or a mixture entry) may name the build's version folder,
e.g. `/data/tfds/jaxtalk_voxceleb2/256/1.0.0`.

One dataset format for training: the loaders read these builds as they are rather than
the builders also writing the `jaxtalk prepare` layout. A second copy would double the
storage and, on Beam, mean side-effect writes outside tfds's writer (retried workers, no
atomic commit). Reading needs only tfds's public TF-free reader
(`tfds.builder_from_directory(...).as_data_source`) and two metadata fields these
builders record (`identities`, `size`), never tfds's file naming or record encoding.
The price: an example reads its whole clip blob (format 1 in `records`) and, with no
per-clip index, frame counts and identities are learnt from the blob, so other-identity
negatives are found by drawing clips (`clip_store.TfdsClipStore`); the `jaxtalk prepare`
layout stays the fast one.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib.util
import json
import os
import shutil
import sys
from typing import Any

import numpy as np
from absl import logging

from data_pipelines import datasets
from data_pipelines.clip_spec import ClipSpec
from data_pipelines.process import ClipRejected, ProcessConfig, process_clip
from jaxtalk import optional

tfds = optional.tfds("the tfds builders (data_pipelines.tfds_builders)")

METRICS_NAMESPACE = "jaxtalk"
SPECS_PER_STAGED_FILE = 512
_STAGING_DIR = "beam_clip_specs"


def clip_example(
    spec: ClipSpec, cfg: ProcessConfig, identities: dict[str, int]
) -> tuple[str, dict[str, Any]] | ClipRejected:
    """The one unit of work of both paths: a clip spec -> its (key, example), or why it was rejected."""
    try:
        record = process_clip(spec, cfg)
    except ClipRejected as e:
        return e
    record.identity_index = identities[spec.identity]
    return spec.clip_id, {
        "clip_id": spec.clip_id,
        "identity": spec.identity,
        "num_frames": record.num_frames,
        "record": record.to_bytes(cfg.jpeg_quality),
    }


def _counter_name(split: str, what: str) -> str:
    return f"{split}/{what}"


def _beam_clip_examples(
    spec: ClipSpec, *, cfg: ProcessConfig, identities: dict[str, int], split: str
):
    """Beam FlatMap body (runs in the workers): 0 or 1 (key, example), counted by outcome."""
    metrics = tfds.core.lazy_imports.apache_beam.metrics.Metrics
    out = clip_example(spec, cfg, identities)
    if isinstance(out, ClipRejected):
        logging.info("skipped %s: %s", spec.clip_id, out)
        metrics.counter(METRICS_NAMESPACE, _counter_name(split, f"rejected/{out.reason}")).inc()
        return []
    metrics.counter(METRICS_NAMESPACE, _counter_name(split, "written")).inc()
    return [out]


def _spec_to_json(spec: ClipSpec) -> dict:
    out = dataclasses.asdict(spec)
    out["boxes"] = None if spec.boxes is None else np.asarray(spec.boxes, np.float32).tolist()
    return out


def _spec_from_json(fields: dict) -> ClipSpec:
    boxes, extra = fields.pop("boxes"), fields.pop("extra")
    return ClipSpec(
        **fields,
        boxes=None if boxes is None else np.asarray(boxes, np.float32),
        extra=tuple(tuple(pair) for pair in extra),
    )


def _read_staged_specs(path: str) -> list[ClipSpec]:
    # JSON, not pickle: a staging directory on shared storage must not be able to run code.
    return [_spec_from_json(f) for f in json.loads(tfds.core.Path(path).read_text())]


def _stage_specs(specs: list[ClipSpec], directory: str, split: str) -> list[str]:
    """Writes `specs` as JSON files of SPECS_PER_STAGED_FILE specs; returns their paths."""
    tfds.core.Path(directory).mkdir(parents=True, exist_ok=True)
    paths = []
    for start in range(0, len(specs), SPECS_PER_STAGED_FILE):
        path = tfds.core.Path(directory) / f"{split}-{start // SPECS_PER_STAGED_FILE:06d}.json"
        path.write_text(
            json.dumps([_spec_to_json(s) for s in specs[start : start + SPECS_PER_STAGED_FILE]])
        )
        paths.append(os.fspath(path))
    return paths


class _ClipBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base: subclasses set DATASET (a key of datasets.DATASETS).

    `use_beam`: None (default) takes the Beam path when the download config has a Beam
    runner or pipeline options; True / False force it on / off.
    """

    DATASET = ""
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name=str(s), description=f"{s}x{s} crops") for s in (256, 512, 64)
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put the official metadata and videos in manual_dir, laid out as in "
        "data_pipelines/parsers/<dataset>.py describes."
    )

    def __init_subclass__(cls, **kwargs):
        # Run as `python -m data_pipelines.tfds_builders`, this file is also `__main__`: only the
        # importable copy registers its builders (Beam workers find its functions by module name).
        if cls.__module__ == "__main__":
            kwargs["skip_registration"] = True
        super().__init_subclass__(**kwargs)

    def __init__(self, *, use_beam: bool | None = None, **kwargs):
        super().__init__(**kwargs)
        self._use_beam = use_beam
        self._original_state["use_beam"] = (
            use_beam  # kept when tfds pickles and rebuilds the builder
        )
        self._beam = False

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "clip_id": tfds.features.Text(),
                    "identity": tfds.features.Text(),
                    "num_frames": tfds.features.Scalar(np.int32),
                    "record": tfds.features.Tensor(shape=(), dtype=np.object_),
                }
            ),
            supervised_keys=None,
            metadata=tfds.core.MetadataDict(),
        )

    def _download_and_prepare(self, dl_manager, download_config):
        if self._use_beam is not None:
            self._beam = self._use_beam
        else:
            self._beam = (
                download_config.beam_runner is not None or download_config.beam_options is not None
            )
        if (
            self._beam
            and download_config.nondeterministic_order
            and self.info.file_format != tfds.core.FileFormat.TFRECORD
        ):
            raise ValueError(
                f"tfds {tfds.__version__} writes {self.info.file_format.value} through Beam only with its deterministic "
                "writer (its nondeterministic one needs FileAdapter.beam_sink, which only tfrecord has): "
                "drop --nondeterministic_order"
            )
        try:
            super()._download_and_prepare(dl_manager, download_config)
        finally:
            if self._beam:
                shutil.rmtree(self._staging_dir(), ignore_errors=True)

    def _staging_dir(self) -> str:
        """Where the Beam path stages the clip specs: inside the dataset's temporary directory."""
        return os.path.join(self.data_dir, _STAGING_DIR)

    def _split_generators(self, dl_manager):
        ds = datasets.DATASETS[self.DATASET]
        specs, report = ds.parse(str(dl_manager.manual_dir))
        logging.info("%s: %s", self.DATASET, report.summary())
        identities = {ident: i for i, ident in enumerate(sorted({s.identity for s in specs}))}
        cfg = ProcessConfig(
            size=int(self.builder_config.name), filters=ds.filters, require_audio=ds.audio
        )
        splits = sorted({s.split for s in specs})
        # identities and size: what the training loaders read a tfds directory by (info.py).
        self.info.metadata.update(
            rejected={split: {} for split in splits},
            parse_skipped=dict(report.counts),
            identities=sorted(identities, key=identities.get),
            size=cfg.size,
        )
        return {
            split: self._generate_examples(
                sorted((s for s in specs if s.split == split), key=lambda s: s.clip_id),
                cfg,
                identities,
                split,
            )
            for split in splits
        }

    def _generate_examples(self, specs, cfg, identities, split):
        if self._beam:
            return self._beam_examples(specs, cfg, identities, split)
        return self._local_examples(specs, cfg, identities, split)

    def _local_examples(self, specs, cfg, identities, split):
        rejected = collections.Counter()
        for spec in specs:
            out = clip_example(spec, cfg, identities)
            if isinstance(out, ClipRejected):
                logging.info("skipped %s: %s", spec.clip_id, out)
                rejected[out.reason] += 1
                continue
            yield out
        self.info.metadata["rejected"][split] = dict(rejected)
        logging.info("%s %s: rejected %s", self.DATASET, split, dict(rejected) or "none")

    def _beam_examples(self, specs, cfg, identities, split):
        """A PTransform () -> (key, example): staged spec files -> specs spread over workers -> examples."""
        beam = tfds.core.lazy_imports.apache_beam
        paths = _stage_specs(specs, self._staging_dir(), split)
        return (
            beam.Create(paths)  # Create reshuffles its elements: the files are read in parallel
            | "ReadSpecs" >> beam.FlatMap(_read_staged_specs)
            | "SpreadSpecs" >> beam.Reshuffle()
            | "ProcessClips"
            >> beam.FlatMap(_beam_clip_examples, cfg=cfg, identities=identities, split=split)
        )

    def _process_pipeline_result(self, pipeline_result) -> None:
        """After the Beam pipeline: the rejection counters -> metadata.json and the log."""
        beam = tfds.core.lazy_imports.apache_beam
        try:
            counters = pipeline_result.metrics().query(
                beam.metrics.MetricsFilter().with_namespace(METRICS_NAMESPACE)
            )["counters"]
        except Exception as e:  # pylint: disable=broad-except
            logging.warning(
                "%s: this runner gave no Beam metrics (%s); rejection counts not recorded",
                self.DATASET,
                e,
            )
            self.info.metadata["rejected"] = None  # unknown, not zero
            return
        totals = collections.Counter()
        for counter in counters:
            totals[counter.key.metric.name] += counter.result or 0
        rejected = self.info.metadata["rejected"]
        for name, count in sorted(totals.items()):
            split, what = name.split("/", 1)
            if what.startswith("rejected/") and count:
                rejected.setdefault(split, {})[what[len("rejected/") :]] = count
        for split in sorted(rejected):
            logging.info(
                "%s %s: %d written, rejected %s",
                self.DATASET,
                split,
                totals[_counter_name(split, "written")],
                rejected[split] or "none",
            )


def build_main(argv: list[str] | None = None) -> None:
    """`tfds build` for these builders without TensorFlow: tfds's own build command and flags.

    tfds 4.9.10's `tfds` script cannot start without TensorFlow (its convert_format command
    annotates with `tf.train.Example` at import); the build command it dispatches to does not
    need it. `--imports=data_pipelines.tfds_builders` is added, so datasets are named as
    `jaxtalk_voxceleb2/256`.
    """
    from tensorflow_datasets.scripts.cli import build, cli_utils  # pylint: disable=import-outside-toplevel

    argv = list(sys.argv[1:] if argv is None else argv)
    if (
        any(a.startswith("--beam_pipeline_options") for a in argv)
        and importlib.util.find_spec("apache_beam") is None
    ):
        # tfds would drop the options silently and build on this machine alone.
        raise SystemExit('--beam_pipeline_options needs Apache Beam: pip install -e ".[beam]"')
    if not any(a == "--imports" or a.startswith("--imports=") for a in argv):
        argv.append("--imports=data_pipelines.tfds_builders")
    logging.set_verbosity(logging.INFO)
    # Not cli_utils.make_flags_parser: that parser also takes every absl flag defined in the
    # process, and jaxtalk's own `--manual_dir` (commands/prepare.py) would then clash.
    parser = cli_utils.ArgumentParser(
        description=build_main.__doc__.splitlines()[0],
        allow_abbrev=False,
        inherited_absl_flags=None,
    )
    parser.add_arguments(build.Args, dest="args")
    parser.parse_args(argv).args.execute()


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


if __name__ == "__main__":
    build_main()
