"""Which prepared datasets `config.data` names, with what weights: one `data_dir` or a mixture.

    data.data_dir = "data/vox2_256"              one dataset (the default form)
    data.data_dir = ""                           ... or a mixture:
    data.data_root = "data/paper_256"            relative entries are under it
    data.mixture = "voxceleb2:0.6, hdtf:0.3, vfhq:0.1"

`mixture` is a string so that `--config.data.mixture=...` overrides it whole on the command
line. Entries are separated by commas; each is `DIR[:WEIGHT[:TRAIN_SPLIT]]`:
  DIR          a `jaxtalk prepare` directory or a tfds build's version folder; relative
               paths are joined to `data.data_root` (as `jaxtalk prepare --root` writes them)
  WEIGHT       its share of the examples (normalised over the entries); leave every weight
               out (`vox2,hdtf`) to weight each dataset by its examples in the split, i.e.
               sample uniformly over the union of their clips
  TRAIN_SPLIT  the dataset's split read when the loader asks for `train` (default train);
               any other split (the eval split) is read under its own name
Trailing `:` fields never contain "/", so `gs://bucket/vox2:0.6` parses as DIR and WEIGHT.

A non-empty `data_dir` wins over `mixture`: the evaluation sweep and the lip-sync probe
point a run's config at one test set by setting `data_dir`, and that must not be mixed
back in. Recipes that train on a mixture therefore set `data_dir = ""`.

Identities: dataset k's identity indices are offset by the identities of datasets 0..k-1
(each counted over all its splits, as its info file lists them), so identity labels never
collide across the mixture; `num_identities` is the total. The same person in two
datasets (VoxCeleb1 and 2 share celebrities under different ids) counts twice.
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections
import numpy as np
from absl import logging

from data_pipelines import clip_store
from data_pipelines import info as info_lib
from jaxtalk.errors import InputError

TRAIN = "train"


class MixtureError(InputError):
    """A `data.mixture` (or `data.data_dir`) that names nothing usable."""


@dataclasses.dataclass(frozen=True)
class Entry:
    data_dir: str
    weight: float | None = None  # None: by its number of examples
    train_split: str = TRAIN

    def split(self, split: str) -> str:
        return self.train_split if split == TRAIN else split


def _parse_entry(text: str, root: str) -> Entry:
    fields = []
    head = text
    while len(fields) < 2 and ":" in head and "/" not in head.rpartition(":")[2]:
        head, _, tail = head.rpartition(":")
        fields.insert(0, tail.strip())
    if not head.strip():
        raise MixtureError(f"data.mixture entry {text!r}: no directory")
    weight_text = fields[0] if fields else ""
    split = fields[1] if len(fields) > 1 and fields[1] else TRAIN
    weight = None
    if weight_text:
        try:
            weight = float(weight_text)
        except ValueError:
            raise MixtureError(
                f"data.mixture entry {text!r}: weight {weight_text!r} is not a number"
            ) from None
        if not np.isfinite(weight) or weight <= 0:
            raise MixtureError(f"data.mixture entry {text!r}: weight must be > 0")
    return Entry(os.path.join(root, head.strip()), weight, split)


def parse(spec: str, root: str = "") -> list[Entry]:
    """The entries of a mixture string (see the module doc)."""
    entries = [_parse_entry(t.strip(), root) for t in spec.split(",") if t.strip()]
    if not entries:
        raise MixtureError(f"data.mixture {spec!r} names no dataset")
    given = [e.weight is not None for e in entries]
    if any(given) and not all(given):
        raise MixtureError(
            f"data.mixture {spec!r}: give every entry a weight or none (none: by size)"
        )
    dirs = [e.data_dir for e in entries]
    if len(set(dirs)) != len(dirs):
        raise MixtureError(f"data.mixture {spec!r} names a directory twice")
    return entries


def entries(data_config: ml_collections.ConfigDict) -> list[Entry]:
    """The datasets `data_config` names: its `data_dir`, else its `mixture` (module doc)."""
    mixture = data_config.get("mixture", "")
    if data_config.data_dir:
        if mixture:
            logging.warning(
                "data.data_dir=%s is set, so data.mixture is ignored", data_config.data_dir
            )
        return [Entry(data_config.data_dir)]
    if not mixture:
        raise MixtureError("config.data: set data.data_dir or data.mixture")
    return parse(mixture, data_config.get("data_root", ""))


@dataclasses.dataclass
class Mixture:
    """The opened stores of one split of every entry, their weights and identity offsets."""

    entries: list[Entry]
    stores: list
    identity_offsets: np.ndarray  # int64 [K]
    num_identities: int

    def weights(self, samples_per_clip: int = 1) -> np.ndarray:
        """Normalised weights; by examples where the entries give none."""
        if self.entries[0].weight is None:
            w = np.array([len(s) * samples_per_clip for s in self.stores], np.float64)
        else:
            w = np.array([e.weight for e in self.entries], np.float64)
        return w / w.sum()

    def size(self, image_size: int = 0) -> int:
        """The output side: `image_size`, else the records' (which must then agree)."""
        if image_size:
            return image_size
        sizes = {s.size for s in self.stores}
        if len(sizes) > 1:
            dirs = ", ".join(f"{e.data_dir}={s.size}" for e, s in zip(self.entries, self.stores))
            raise MixtureError(
                f"data.mixture: records of different sizes ({dirs}); set data.image_size"
            )
        return sizes.pop()


def open_mixture(data_config: ml_collections.ConfigDict, split: str) -> Mixture:
    """Opens `split` of every dataset `data_config` names (one for a plain `data_dir`)."""
    items = entries(data_config)
    stores = [clip_store.ClipStore.open(e.data_dir, e.split(split)) for e in items]
    for e, s in zip(items, stores):
        if not len(s):
            raise MixtureError(f"{e.data_dir}: split {e.split(split)!r} has no records")
    counts = np.array([s.num_identities for s in stores], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return Mixture(items, stores, offsets, int(counts.sum()))


def num_identities(data_config: ml_collections.ConfigDict) -> int:
    """Identity classes over every dataset named (what metric-learning heads are sized by):
    the sum of the info files' identity lists, which `open_mixture` offsets by."""
    return sum(len(info_lib.load_info(e.data_dir)["identities"]) for e in entries(data_config))
