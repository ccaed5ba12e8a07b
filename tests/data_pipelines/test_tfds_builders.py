"""The tfds builder paths: array_record output readable without TensorFlow, the same from the
plain generator and from Apache Beam workers, with rejected clips skipped and counted."""

import logging
import os
import sys

import numpy as np
import pytest

from data_pipelines import clip_store, datasets, loaders, pipeline, records
from data_pipelines import info as info_lib
from data_pipelines.process import ProcessConfig
from data_pipelines.synthetic import generate
from jaxtalk.errors import InputError
from tests.tasks.helpers import one_device_train

# tensorflow-datasets is the `tfds` extra (in `dev`); without it these tests skip.
tfds = pytest.importorskip("tensorflow_datasets", reason="pip install 'jaxtalk[tfds]'")

# Two identities (one train, one test) with two 1.2 s videos each; one train video is corrupt.
RAW = generate.SyntheticConfig(
    num_identities=2,
    videos_per_identity=2,
    utterances_per_video=1,
    utterance_seconds=1.2,
    resolution=96,
)
REJECTED = {"train": {"unreadable video": 1}, "test": {}}


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    raw = str(tmp_path_factory.mktemp("tfds_raw"))
    generate.generate(raw, RAW, log=lambda *_: None)
    specs, _ = datasets.DATASETS["synthetic"].parse(raw)
    corrupt = sorted(s.video_path for s in specs if s.split == "train")[0]
    with open(corrupt, "wb") as f:
        f.write(b"not a video" * 100)
    return raw


@pytest.fixture(scope="module")
def generator_dir(raw_dir, tmp_path_factory):
    """Built the documented way (`python -m data_pipelines.tfds_builders`, no Beam options)."""
    from data_pipelines import tfds_builders  # pylint: disable=import-outside-toplevel

    data_dir = str(tmp_path_factory.mktemp("tfds_generator"))
    tfds_builders.build_main(
        [
            "jaxtalk_synthetic/64",
            f"--manual_dir={raw_dir}",
            f"--data_dir={data_dir}",
            "--file_format=array_record",
        ]
    )
    return data_dir


def _examples(data_dir: str) -> dict[str, dict[str, tuple]]:
    """split -> clip_id -> (identity, num_frames, record bytes), read with tfds.data_source."""
    source = tfds.data_source("jaxtalk_synthetic/64", data_dir=data_dir)
    return {
        split: {
            ex["clip_id"]: (ex["identity"], int(ex["num_frames"]), ex["record"])
            for ex in (source[split][i] for i in range(len(source[split])))
        }
        for split in source
    }


def test_tfds_builder_on_synthetic(generator_dir):
    source = tfds.data_source("jaxtalk_synthetic/64", data_dir=generator_dir)
    assert (
        sorted(source) == ["test", "train"]
        and len(source["train"]) == 1
        and len(source["test"]) == 2
    )
    example = source["train"][0]
    rec = records.unpack(example["record"])
    assert rec["num_frames"] == example["num_frames"] == 30 and len(rec["audio"]) == 30 * 640
    assert records.decode_jpeg(rec["frames"][0]).shape == (64, 64, 3)
    info = tfds.builder(
        "jaxtalk_synthetic/64", data_dir=generator_dir
    ).info  # as reloaded from disk
    assert info.metadata["rejected"] == REJECTED
    assert "tensorflow" not in sys.modules  # no TensorFlow was needed


def test_tfds_builder_with_beam(raw_dir, generator_dir, tmp_path, caplog):
    """Beam's FnApiRunner, two worker processes: the same clips and bytes as the generator path.

    (FnApiRunner is what the DirectRunner falls back to after trying to download Prism.)"""
    beam = pytest.importorskip("apache_beam")
    from data_pipelines import tfds_builders  # pylint: disable=import-outside-toplevel

    data_dir = str(tmp_path / "beam")
    options = beam.options.pipeline_options.PipelineOptions(
        ["--runner=FnApiRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    )
    builder = tfds_builders.JaxtalkSynthetic(
        config="64", data_dir=data_dir, file_format="array_record"
    )
    with caplog.at_level(logging.INFO):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=raw_dir, beam_options=options)
        )
    # The workers' Beam counters, as the launcher read them after the pipeline:
    assert "synthetic train: 1 written, rejected {'unreadable video': 1}" in caplog.text
    assert "synthetic test: 2 written, rejected none" in caplog.text

    got, want = _examples(data_dir), _examples(generator_dir)
    assert {split: sorted(clips) for split, clips in got.items()} == {
        split: sorted(clips) for split, clips in want.items()
    }
    assert got == want  # same identities, frame counts and record bytes (JPEG frames, audio)
    info = tfds.builder("jaxtalk_synthetic/64", data_dir=data_dir).info
    assert info.metadata["rejected"] == REJECTED  # from the Beam counters
    assert info.file_format.value == "array_record"
    assert not list((tmp_path / "beam").rglob("*.json"))  # the staged clip specs are gone
    assert "tensorflow" not in sys.modules


def test_tfds_builder_beam_refuses_nondeterministic_array_record(raw_dir, tmp_path):
    from data_pipelines import tfds_builders  # pylint: disable=import-outside-toplevel

    builder = tfds_builders.JaxtalkSynthetic(
        config="64", data_dir=str(tmp_path), file_format="array_record", use_beam=True
    )
    with pytest.raises(ValueError, match="nondeterministic_order"):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                manual_dir=raw_dir, nondeterministic_order=True
            )
        )


def test_staged_specs_round_trip_as_json(tmp_path):
    from data_pipelines import tfds_builders  # pylint: disable=import-outside-toplevel
    from data_pipelines.clip_spec import ClipSpec  # pylint: disable=import-outside-toplevel

    specs = [
        ClipSpec(
            "a",
            "voxceleb1",
            "/v.mp4",
            "id1",
            "train",
            1.0,
            2.0,
            np.arange(8, dtype=np.float32).reshape(2, 4),
            360.0,
            1.1,
            None,
            (("k", "v"),),
        ),
        ClipSpec("b", "hdtf", "/w.mp4", "id2", "test"),
    ]
    paths = tfds_builders._stage_specs(specs, str(tmp_path), "train")
    assert [p.endswith(".json") for p in paths] == [True]  # data, never pickle
    back = tfds_builders._read_staged_specs(paths[0])
    assert [b.extra for b in back] == [s.extra for s in specs] and back[1].boxes is None
    np.testing.assert_array_equal(back[0].boxes, specs[0].boxes)
    assert back[0].start_sec == 1.0 and back[0].box_ref_height == 360.0


@pytest.fixture(scope="module")
def tfds_version_dir(generator_dir):
    return os.path.join(generator_dir, "jaxtalk_synthetic", "64", "1.0.0")


@pytest.fixture(scope="module")
def prepared_dir(raw_dir, tmp_path_factory):
    """The same raw set through `jaxtalk prepare`'s path (prepare_dataset minus generating
    the raw set, which would overwrite `raw_dir`)."""
    out = str(tmp_path_factory.mktemp("prepared"))
    ds = datasets.DATASETS["synthetic"]
    specs, report = ds.parse(raw_dir)
    cfg = ProcessConfig(size=64, filters=ds.filters)
    pipeline.prepare(specs, report, out, name="synthetic", cfg=cfg, log=lambda *_: None)
    return out


def test_loaders_read_a_tfds_build_as_prepare_writes_it(tfds_version_dir, prepared_dir):
    """One format for training: a tfds build's clips are the `jaxtalk prepare` clips."""
    assert info_lib.load_info(tfds_version_dir)["identities"] == ["id00000", "id00001"]
    for split in ("train", "test"):
        tfds_store = clip_store.ClipStore.open(tfds_version_dir, split)
        store = clip_store.ClipStore.open(prepared_dir, split)
        assert len(tfds_store) == len(store) and tfds_store.size == store.size == 64
        by_id = {store.clip(i).header["clip_id"]: store.clip(i) for i in range(len(store))}
        for i in range(len(tfds_store)):
            got = tfds_store.clip(i)
            want = by_id[got.header["clip_id"]]
            assert (got.num_frames, got.identity_index) == (want.num_frames, want.identity_index)
            assert [got.jpeg(f) for f in (0, got.num_frames - 1)] == [
                want.jpeg(f) for f in (0, want.num_frames - 1)
            ]
    with pytest.raises(InputError, match="no split 'validation'"):
        clip_store.ClipStore.open(tfds_version_dir, "validation")
    assert "tensorflow" not in sys.modules


def test_tiny_stage1_trains_a_step_on_both_formats(tfds_version_dir, prepared_dir, tmp_path):
    """A mixture of the tfds build and the prepared directory: one step reads both."""
    from configs import anitalker_stage1  # pylint: disable=import-outside-toplevel

    c = anitalker_stage1.get_config("tiny")
    c.data.update(dict(data_dir="", mixture=f"{tfds_version_dir}:0.5,{prepared_dir}:0.5"))
    c.update(dict(batch_size=8, total_steps=1))
    c.model.size = c.data.image_size = 32  # both 64-pixel sets read at 32: a cheaper step
    c.log.update(dict(every_steps=1, progress_bar=False, tensorboard=False))
    c.eval.every_steps = c.samples.every_steps = c.checkpoint.every_steps = 0
    batch = next(loaders.make_loader(c.data, split="train", global_batch_size=8, seed=0).__iter__())
    assert set(batch["dataset"]) == {0, 1} and batch["source"].shape == (8, 32, 32, 3)
    assert np.all(batch["identity"] - 2 * batch["dataset"] == 0)  # id00000 of each, offset 2
    out = one_device_train(c, str(tmp_path / "run"))
    assert np.isfinite(out["generator/loss"])
