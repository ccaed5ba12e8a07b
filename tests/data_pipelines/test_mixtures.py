"""Mixtures of prepared datasets: `jaxtalk prepare --root`, mixing by weight, exact resume,
identity offsets, every loader kind, clear errors, and a tiny stage-1 step on a mixture."""

import json
import os

import jax
import numpy as np
import pytest
from absl import app, flags

from data_pipelines import datasets, loaders, mixture
from data_pipelines.synthetic import generate
from jaxtalk.commands import prepare
from jaxtalk.errors import InputError
from tests.tasks.helpers import one_device_train, shared_synthetic

SIZE = 32


def _raw(num_identities: int, seed: int) -> generate.SyntheticConfig:
    return generate.SyntheticConfig(
        num_identities=num_identities,
        videos_per_identity=1,
        utterances_per_video=2,
        utterance_seconds=1.2,
        resolution=96,
        test_identities=1,
        seed=seed,
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Three synthetic sets under one root: 4, 3 and 2 identities (6, 4, 2 train clips).

    The first through the command (`--root`, so it lands in <root>/synthetic), the others
    under names of their own with prepare_dataset."""
    root = str(tmp_path_factory.mktemp("paper_like"))
    argv = ["jaxtalk prepare", "synthetic", f"--root={root}", f"--size={SIZE}", "--seed=1"]
    argv += ["--num_identities=4", "--videos_per_identity=1", "--utterances_per_video=2"]
    argv += ["--utterance_seconds=1.2", "--raw_resolution=96", "--clips_per_shard=2"]
    with pytest.raises(SystemExit) as exit_info:
        app.run(prepare.main, argv=argv)
    flags.FLAGS.unparse_flags()  # --root must not leak into later in-process commands
    assert exit_info.value.code in (None, 0)
    for name, ids, seed in (("b", 3, 2), ("c", 2, 3)):
        datasets.prepare_dataset(
            "synthetic",
            None,
            os.path.join(root, name),
            size=SIZE,
            synthetic=_raw(ids, seed),
            clips_per_shard=2,
            log=lambda *_: None,
        )
    return root


def _cfg(root, spec="synthetic:0.6,b:0.3,c:0.1", **kw):
    cfg = loaders.default_data_config()
    cfg.update({"data_dir": "", "data_root": root, "mixture": spec, "num_frames": 4, **kw})
    return cfg


def _loader(cfg, batch=10, seed=0, **kw):
    return loaders.make_loader(cfg, split="train", global_batch_size=batch, seed=seed, **kw)


def test_prepare_root_writes_one_folder_per_dataset(root):
    assert sorted(os.listdir(root)) == ["b", "c", "synthetic"]
    with open(os.path.join(root, "synthetic", "dataset_info.json")) as f:
        assert json.load(f)["splits"]["train"]["num_clips"] == 6
    assert prepare.output_dir("hdtf", None, root) == os.path.join(root, "hdtf")
    for both_or_neither in ((root, root), (None, None)):
        with pytest.raises(InputError, match="--out_dir=DIR or --root=ROOT"):
            prepare.output_dir("hdtf", *both_or_neither)


def test_mix_follows_the_weights(root):
    cfg = _cfg(root, num_negatives=0)
    # The whole mixed epoch (positions only, no decoding): shares match the weights and
    # every clip of every dataset is in it.
    mix = mixture.open_mixture(cfg, "train")
    source = loaders._source(mix, 1, seed=0, shuffle=True)
    items = [source[i] for i in range(len(source))]
    counts = np.bincount([int(x["dataset"]) for x in items], minlength=3)
    np.testing.assert_allclose(counts / counts.sum(), [0.6, 0.3, 0.1], atol=0.01)
    for k, store in enumerate(mix.stores):
        assert {int(x["index"]) for x in items if x["dataset"] == k} == set(range(len(store)))
    # What the loader yields: 400 examples, shuffled across the epoch.
    it = iter(_loader(cfg))
    seen = np.concatenate([next(it)["dataset"] for _ in range(40)])
    np.testing.assert_allclose(
        np.bincount(seen, minlength=3) / len(seen), [0.6, 0.3, 0.1], atol=0.06
    )
    # No weights: by size (6, 4, 2 clips).
    by_size = mixture.open_mixture(_cfg(root, "synthetic,b,c"), "train").weights()
    np.testing.assert_allclose(by_size, [0.5, 1 / 3, 1 / 6])


def test_identities_are_offset_per_dataset(root):
    cfg = _cfg(root, num_negatives=2)
    mix = mixture.open_mixture(cfg, "train")
    assert list(mix.identity_offsets) == [0, 4, 7] and mix.num_identities == 9
    assert mixture.num_identities(cfg) == 9
    it = iter(_loader(cfg))
    for _ in range(6):
        batch = next(it)
        for k, ident, negatives in zip(
            batch["dataset"], batch["identity"], batch["negative_identity"]
        ):
            lo, hi = mix.identity_offsets[k], mix.identity_offsets[k] + mix.stores[k].num_identities
            assert lo <= ident < hi and np.all((lo <= negatives) & (negatives < hi))
            alone = len(set(mix.stores[k].identity_index)) == 1  # c: one train identity
            assert alone or np.all(negatives != ident)


@pytest.mark.parametrize("kind", loaders.KINDS)
def test_every_kind_resumes_exactly(root, kind):
    cfg = _cfg(root, kind=kind, num_negatives=1)
    it = iter(_loader(cfg, batch=4, seed=5))
    first = next(it)
    assert first["identity"].shape == first["dataset"].shape == (4,)
    image = {
        "pairs": "source",
        "windows": "frames",
        "reference_window": "reference",
        "landmark_video": "reference_landmark_image",
        "driving_video": "driving",
    }[kind]
    assert first[image].shape[-3:] == (SIZE, SIZE, 3)
    next(it)
    # As the training loop checkpoints it: the state through JSON.
    state = json.loads(json.dumps(it.get_state().decode()))
    expected = [next(it) for _ in range(5)]  # crosses the mixed epoch (16 examples)
    resumed = iter(_loader(cfg, batch=4, seed=5))
    resumed.set_state(state.encode())
    for want in expected:
        got = next(resumed)
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_per_dataset_train_split(root):
    """`DIR:WEIGHT:SPLIT` reads that split for `train`; other splits keep their name."""
    cfg = _cfg(root, "synthetic:0.5,b:0.5:test", num_negatives=0)
    mix = mixture.open_mixture(cfg, "train")
    assert [len(s) for s in mix.stores] == [6, 2]
    assert [len(s) for s in mixture.open_mixture(cfg, "test").stores] == [2, 2]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("synthetic:0.5,missing:0.5", "missing: not a prepared dataset"),
        ("synthetic:0.5,b:heavy", "weight 'heavy' is not a number"),
        ("synthetic:0.5,b:-1", "'b:-1': weight must be > 0"),
        ("synthetic:0.5,b", "give every entry a weight or none"),
        ("synthetic,synthetic", "names a directory twice"),
        ("synthetic:1:validation", "no split 'validation'"),
        (" , ", "names no dataset"),
        ("", "set data.data_dir or data.mixture"),
    ],
)
def test_bad_mixtures_are_one_line_errors(root, spec, message):
    with pytest.raises(InputError, match=message) as e:
        _loader(_cfg(root, spec))
    assert "\n" not in str(e.value)


def test_data_dir_wins_and_sizes_must_agree(root, tmp_path_factory):
    cfg = _cfg(root, "b,c", data_dir=os.path.join(root, "synthetic"))
    assert [e.data_dir for e in mixture.entries(cfg)] == [os.path.join(root, "synthetic")]
    other = shared_synthetic(tmp_path_factory)  # prepared at 64, not SIZE
    with pytest.raises(InputError, match="different sizes.*data.image_size"):
        _loader(_cfg(root, f"b,{other}"))
    batch = next(iter(_loader(_cfg(root, f"b,{other}", image_size=24, num_negatives=0), batch=4)))
    assert batch["source"].shape == (4, 24, 24, 3)


def test_tiny_stage1_trains_a_step_on_the_paper_mixture(root, tmp_path):
    """The paper recipe's own mixture (voxceleb2, hdtf, vfhq under its data root, as
    `jaxtalk prepare DATASET --root=ROOT` names them), the three synthetic sets standing in."""
    from configs import anitalker_stage1

    paper_root = tmp_path / "paper_256"
    paper_root.mkdir()
    for name, stand_in in (("voxceleb2", "synthetic"), ("hdtf", "b"), ("vfhq", "c")):
        (paper_root / name).symlink_to(os.path.join(root, stand_in))
    paper = anitalker_stage1.get_config("paper").data
    assert paper.mixture == "voxceleb2,hdtf,vfhq" and not paper.data_dir
    c = anitalker_stage1.get_config("tiny")
    c.data.update(dict(data_dir="", data_root=str(paper_root), mixture=paper.mixture))
    c.model.size = SIZE
    c.update(dict(batch_size=8, total_steps=1))
    c.log.update(dict(every_steps=1, progress_bar=False, tensorboard=False))
    c.eval.every_steps = c.samples.every_steps = c.checkpoint.every_steps = 0
    out = one_device_train(c, str(tmp_path / "run"))
    assert np.isfinite(out["generator/loss"]) and np.isfinite(out["generator/metric_learning"])
    # The metric-learning head has one class per identity of the whole mixture.
    aam = out["state"].params["generator"]["aam"]
    assert 9 in {d for x in jax.tree.leaves(aam) for d in np.shape(x)}
