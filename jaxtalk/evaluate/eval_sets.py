"""Test sets by name: `NAME=DIR[:SPLIT]`, or a bare `NAME` under a data root.

A test set is a split of a directory written by `jaxtalk prepare`. The papers' sets have
names whose split defaults to the one `jaxtalk prepare` fills for them:

  hdtf       test   videos named by `prepare hdtf --test_list` (e.g. the DINet list), or the
                    identities held out by --test_fraction
  vfhq       test   VFHQ-Test clips (annotations under a folder whose path has "test")
  voxceleb1  test   the official test identities (id10270-id10309, the vox1 test archive)
  voxceleb2  test   the official test identities (the vox2 test archive)
  celebvhq   test   ids named by `prepare celebvhq --test_list`, or held out by --test_fraction
  talkinghead1kh  test   the official `val` tubes (data_list/val_video_tubes.txt)
  synthetic  test   the embedded synthetic set's held-out identities

  synthetic=/data/syn64            the test split of /data/syn64
  hdtf                             <--data_root>/hdtf, split test
  mine=/data/vox_hdtf_vfhq:test    any other name needs its split spelled out
"""

from __future__ import annotations

import dataclasses
import os

from data_pipelines import info as info_lib
from jaxtalk import fs
from jaxtalk.errors import InputError

NAMED = {
    "hdtf": "test",
    "vfhq": "test",
    "voxceleb1": "test",
    "voxceleb2": "test",
    "celebvhq": "test",
    "talkinghead1kh": "test",  # `prepare talkinghead1kh` puts the official val list there
    "synthetic": "test",
}


class EvalSetError(InputError):
    """A test-set spec that names nothing usable."""


@dataclasses.dataclass(frozen=True)
class TestSet:
    __test__ = False  # not a pytest class

    name: str
    data_dir: str
    split: str

    def spec(self) -> str:
        return f"{self.name}={self.data_dir}:{self.split}"

    def num_examples(self, samples_per_clip: int = 1) -> int:
        """Examples in one pass over the split, as the data_pipelines loaders count them."""
        clips = info_lib.load_info(self.data_dir)["splits"][self.split]["num_clips"]
        return clips * samples_per_clip


def parse(spec: str, data_root: str | None = None) -> TestSet:
    """A `TestSet` from `NAME=DIR[:SPLIT]` or a named set `NAME` under `data_root`."""
    name, has_dir, rest = spec.partition("=")
    name = name.strip()
    if not name:
        raise EvalSetError(f"test set {spec!r}: expected NAME=DIR[:SPLIT] or a name")
    if has_dir:
        # A split after the last ':' unless that ':' belongs to the path (C:\ ...).
        data_dir, colon, split = rest.rpartition(":")
        if not colon or os.sep in split or not split:
            data_dir, split = rest, None
    else:
        if not data_root:
            raise EvalSetError(
                f"test set {name!r} has no directory: write {name}=DIR[:SPLIT] or pass --data_root"
            )
        data_dir, split = fs.join(data_root, name), None
    if split is None:
        if name not in NAMED:
            raise EvalSetError(
                f"unknown test set {name!r}: named sets are {sorted(NAMED)}; "
                f"for another data dir give its split, {name}=DIR:SPLIT"
            )
        split = NAMED[name]
    return _checked(TestSet(name, fs.absolute(data_dir), split))


def _checked(test_set: TestSet) -> TestSet:
    if not fs.isfile(fs.join(test_set.data_dir, "dataset_info.json")):
        raise EvalSetError(
            f"test set {test_set.name!r}: {test_set.data_dir} is not a prepared "
            "data dir (no dataset_info.json; see `jaxtalk prepare`)"
        )
    info = info_lib.load_info(test_set.data_dir)
    splits = sorted(info.get("splits", {}))
    if test_set.split not in splits:
        raise EvalSetError(
            f"test set {test_set.name!r}: {test_set.data_dir} has no split "
            f"{test_set.split!r} (splits: {splits})"
        )
    prepared_as = info.get("name")
    if test_set.name in NAMED and prepared_as and prepared_as != test_set.name:
        raise EvalSetError(
            f"test set {test_set.name!r}: {test_set.data_dir} was prepared as "
            f"{prepared_as!r}; name it {prepared_as}=DIR or give the split "
            f"under another name"
        )
    return test_set
