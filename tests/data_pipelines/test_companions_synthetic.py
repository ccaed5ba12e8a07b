"""MegActor's companions of the synthetic set: the renderer's masks, swapped and styled streams,
stored with each clip (records format 3) and counted in the info file."""

import json
import os

import numpy as np
from scipy import ndimage

from data_pipelines import clip_store, companions, records
from data_pipelines.synthetic import companions as synthetic_companions
from data_pipelines.synthetic import face


def test_renderer_mask_is_exactly_where_the_background_shows():
    rng = np.random.default_rng(4)
    ident = face.random_identity(rng, 80, 80)
    frame, _, mask = face.Renderer(ident).render(12.0, -5.0, 4.0, 40, 38, 36, 0.6, 0.0, mask=True)
    plain, _ = face.Renderer(ident).render(12.0, -5.0, 4.0, 40, 38, 36, 0.6, 0.0)
    np.testing.assert_array_equal(frame, plain)  # drawing the mask changes nothing
    same = np.all(frame == ident.background, axis=-1)
    assert np.all(same[mask])  # background pixels are the background image's
    assert (~same[~mask]).mean() > 0.99  # and the person covers the rest
    assert 0.2 < mask.mean() < 0.9


def test_swap_face_keeps_hair_shirt_background_and_changes_the_face():
    rng = np.random.default_rng(5)
    target, donor = face.random_identity(rng, 64, 64), face.random_identity(rng, 64, 64)
    swapped = face.swap_face(target, donor)
    assert (swapped.hair, swapped.shirt, swapped.background is target.background) == (
        target.hair,
        target.shirt,
        True,
    )
    assert (swapped.skin, swapped.radii, swapped.eye) == (donor.skin, donor.radii, donor.eye)


def test_donors_stay_in_the_split():
    splits = ["dev", "dev", "dev", "test"]
    assert synthetic_companions.donors(splits) == [1, 2, 0, 0]  # a lone test identity: next
    assert synthetic_companions.donors(["dev", "test", "dev", "test"]) == [2, 3, 0, 1]


def test_stylise_posterises_and_inks_edges():
    rng = np.random.default_rng(0)
    ident = face.random_identity(rng, 64, 64)
    frame, _ = face.Renderer(ident).render(0.0, 0.0, 0.0, 32, 30, 28, 0.3, 0.0)
    styled = synthetic_companions.stylise(frame[None])[0]
    assert styled.shape == frame.shape and styled.dtype == np.uint8
    levels = set(np.unique(styled)) - {20}
    assert levels <= {32, 96, 160, 224}, levels
    ink = np.all(styled == 20, axis=-1)
    assert 0.01 < ink.mean() < 0.3  # outlines, not fill
    assert np.abs(styled.astype(int) - frame).mean() > 20


def _store(synthetic_dir):
    return clip_store.ClipStore.open(synthetic_dir, "train")


def test_prepared_clips_carry_all_three_streams(synthetic_dir):
    with open(os.path.join(synthetic_dir, "dataset_info.json")) as f:
        info = json.load(f)
    n = info["num_clips"]
    assert info["companions"] == {name: n for name in companions.STREAMS}
    assert info["companion_notes"] == {}
    clip = _store(synthetic_dir).clip(1)
    assert clip.streams == companions.STREAMS
    assert clip.header["format"] == records.FORMAT_VERSION == 3
    last = clip.num_frames - 1
    assert records.decode_jpeg(clip.stream("swapped", last)).shape == (32, 32, 3)
    assert companions.decode_mask(clip.stream("background_mask", last)).shape == (32, 32)


def _frames(clip, name, idx):
    if name == "frames":
        return np.stack([records.decode_jpeg(clip.jpeg(i)) for i in idx]).astype(float)
    if name == "background_mask":
        return np.stack([companions.decode_mask(clip.stream(name, i)) for i in idx])
    return np.stack([records.decode_jpeg(clip.stream(name, i)) for i in idx]).astype(float)


def test_stored_streams_follow_the_clip(synthetic_dir):
    """Masks: the face's landmarks are never background, the top corners are. Swapped: the
    same background and hair where the mask says background, another face on the face.
    Styled: another look, the same frame (its ink follows the original's edges)."""
    store = _store(synthetic_dir)
    for c in range(len(store)):
        clip = store.clip(c)
        idx = np.arange(0, clip.num_frames, 7)
        frames = _frames(clip, "frames", idx)
        masks = _frames(clip, "background_mask", idx)
        swapped, styled = _frames(clip, "swapped", idx), _frames(clip, "styled", idx)
        xy = clip.header["attributes"]["landmarks_xy"][idx].reshape(len(idx), 5, 2)
        px = np.clip((xy * 32).astype(int), 0, 31)
        for t in range(len(idx)):
            assert not masks[t][px[t, :, 1], px[t, :, 0]].any()
        assert masks[:, 0, 0].all() and masks[:, 0, -1].all()
        # away from the outline (the faces differ in shape; 32 px blends the edge)
        inner = ndimage.binary_erosion(masks, np.ones((1, 5, 5), bool))
        bg = inner[..., None].repeat(3, -1)
        face_pts = np.stack([swapped[t][px[t, :, 1], px[t, :, 0]] for t in range(len(idx))])
        orig_pts = np.stack([frames[t][px[t, :, 1], px[t, :, 0]] for t in range(len(idx))])
        assert np.abs(swapped - frames)[bg].mean() < 6  # JPEG noise only
        assert np.abs(face_pts - orig_pts).mean() > 15  # another face
        assert np.abs(styled - frames).mean() > 20
        grey = frames @ synthetic_companions.BW
        edge = np.hypot(*np.gradient(grey, axis=(1, 2)))
        ink = np.all(styled < 60, axis=-1)
        assert edge[ink].mean() > 2 * edge[~ink].mean()
