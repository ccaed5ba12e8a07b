"""The LivePortrait release as a directory: `jaxtalk import --release=liveportrait` of
base_models/*.pth and retargeting_models/stitching_retargeting_module.pth, then `jaxtalk
export` of the weights file, gives back the same files key by key and bit for bit (order,
`module.` prefixes, BatchNorm counters, the retargeting file's three entries), on tiny
directories; the sizes import reads from the released key lists
(shared/reference/keys/liveportrait_state_dicts.txt; the converter's own rules where that
file is absent) are the release's, read from their shapes alone; a bad key is an error
naming the file and the key. Nothing here runs a network."""

import logging
import os

import jax
import numpy as np
import pytest

from jaxtalk.convert import liveportrait, releases, torch_pickle, weights
from jaxtalk.convert.mapping import ConversionError, export_state_dict
from jaxtalk.models.liveportrait.retargeting import RELEASED
from tests.evaluate.torch_layout import random_state_dict
from tests.models.liveportrait.test_appearance_warping import KEYS, TINY_F, TINY_W, reference_block
from tests.models.liveportrait.test_motion_generator import TINY_G, TINY_M
from tests.test_cli import jaxtalk

BASE_FILES = {n.group: n.filename for n in liveportrait.BASE_NETWORKS}
REFERENCE_BLOCKS = {"appearance": "F", "motion": "M", "warping": "W", "spade": "G"}
REFERENCE_BLOCKS.update(stitching="S_stitching", lip="S_lip", eye="S_eye")
TINY = {"appearance": TINY_F, "motion": TINY_M, "warping": TINY_W, "spade": TINY_G}
RELEASED_PARAMS = 836_224 + 28_118_728 + 45_529_829 + 55_365_388 + 45_249 + 37_311 + 144_703


def write_release(root, states, base_dir="base_models", prefixes=None):
    """Writes {group: state_dict} in the released layout under `root`: the base networks'
    files, and the retargeting file when `states` has stitching, lip and eye. `prefixes`
    puts a prefix on a group's keys; the retargeting MLPs get `module.` unless told."""
    prefixes = dict({g: "module." for g in liveportrait.RETARGETING_ENTRIES}, **(prefixes or {}))
    files = {}
    for group, filename in BASE_FILES.items():
        path = os.path.join(root, base_dir, filename)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        files[path] = {prefixes.get(group, "") + k: v for k, v in states[group].items()}
        torch_pickle.save(files[path], path)
    if all(g in states for g in liveportrait.RETARGETING_ENTRIES):
        path = os.path.join(root, liveportrait.RETARGETING_FILE)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        files[path] = {
            entry: {prefixes[g] + k: v for k, v in states[g].items()}
            for g, entry in liveportrait.RETARGETING_ENTRIES.items()
        }
        torch_pickle.save(files[path], path)
    return files


def released_blocks():
    """{group: [(key, shape)]}: the release's keys, order and shapes."""
    if KEYS.exists():
        return {g: reference_block(name) for g, name in REFERENCE_BLOCKS.items()}
    blocks = {}
    for net in liveportrait.BASE_NETWORKS:
        zeros = jax.tree.map(lambda s: np.broadcast_to(np.float32(0), s.shape), net.shapes({}))
        blocks[net.group] = [(k, v.shape) for k, v in export_state_dict(zeros, net.rules()).items()]
    for g, cfg in RELEASED.items():
        sizes = [liveportrait._retargeting_sizes(21)[g][0], *cfg["hidden_sizes"]]
        sizes.append(cfg["output_size"])
        blocks[g] = []
        for i in range(len(sizes) - 1):
            blocks[g] += [(f"mlp.{2 * i}.weight", (sizes[i + 1], sizes[i]))]
            blocks[g] += [(f"mlp.{2 * i}.bias", (sizes[i + 1],))]
    return blocks


def tiny_states(seed=0):
    """{group: state_dict} of a tiny model (4 keypoints) from the converter's own rules."""
    rng = np.random.default_rng(seed)
    states = {}
    for net in liveportrait.BASE_NETWORKS:
        states[net.group] = random_state_dict(
            net.rules(**TINY[net.group]), net.shapes(TINY[net.group]), rng
        )
    sizes = liveportrait._retargeting_sizes(TINY_M["num_kp"])
    for g, cfg in RELEASED.items():
        config = dict(cfg, input_size=sizes[g][0], output_size=sizes[g][1])
        shapes = liveportrait._retargeting_shapes(config)
        states[g] = random_state_dict(liveportrait.retargeting_rules(**config), shapes, rng)
    return states


def assert_same_files(out_root, files, in_root):
    """Every file under `in_root` is under `out_root` with the same entries in the same
    order, every tensor of the same dtype, shape and bytes."""

    def same(got, want, where):
        assert list(got) == list(want), where
        for key, value in want.items():
            if isinstance(value, dict):
                same(got[key], value, f"{where} [{key}]")
                continue
            back = got[key]
            assert (back.dtype, back.shape) == (value.dtype, value.shape), (where, key)
            assert back.tobytes() == value.tobytes(), (where, key)

    for path, content in files.items():
        same(torch_pickle.load(path.replace(str(in_root), str(out_root))), content, path)


def count(tree):
    return sum(int(np.prod(np.shape(x))) for x in jax.tree.leaves(tree))


def test_released_key_lists_give_the_release_sizes():
    """The sizes import reads from the released key lists (shapes only: broadcast zeros) are
    the modules' defaults and the retargeting MLPs' released sizes, with the released
    parameter count. The rules' keys and shapes are the models' tests'; the bytes' path
    through import, the weights file and export is the tiny directories' below (the same
    code at any size)."""
    states = {
        g: {k: np.broadcast_to(np.float32(0), shape) for k, shape in block}
        for g, block in released_blocks().items()
    }
    total, configs = 0, {}
    for net in liveportrait.BASE_NETWORKS:
        config = configs[net.group] = net.infer(liveportrait._Keys(states[net.group], "", ""))
        defaults = net.module()
        for field, value in config.items():
            value = tuple(value) if isinstance(value, list) else value
            assert value == getattr(defaults, field), (net.group, field)
        total += count(net.shapes(config)["params"])
    sizes = liveportrait._retargeting_sizes(configs["motion"]["num_kp"])  # M's 21
    for g, released in RELEASED.items():
        config = liveportrait._retargeting_config(liveportrait._Keys(states[g], "", ""))
        assert config == dict(released, input_size=sizes[g][0]), g
        total += count(liveportrait._retargeting_shapes(config)["params"])
    assert total == RELEASED_PARAMS


@pytest.mark.parametrize(
    "prefixes",
    [{}, {"appearance": "module.", "motion": "module.", "spade": "module.", "eye": ""}],
    ids=["as-released", "prefixes-swapped"],
)
def test_tiny_directory_round_trips_with_prefixes_as_read(tmp_path, prefixes):
    files = write_release(tmp_path / "in", tiny_states(), prefixes=prefixes)
    variables = liveportrait.import_checkpoint(tmp_path / "in")
    assert variables["model_config"]["motion"]["num_kp"] == TINY_M["num_kp"]
    assert variables["params"]["lip"]["mlp_6"]["kernel"].shape == (64, 3 * TINY_M["num_kp"])
    liveportrait.export_checkpoint(variables, tmp_path / "out")
    assert_same_files(tmp_path / "out", files, tmp_path / "in")


def test_exported_retargeting_file_reads_in_torch(tmp_path):
    torch = pytest.importorskip("torch")
    write_release(tmp_path / "in", tiny_states())
    liveportrait.export_checkpoint(
        liveportrait.import_checkpoint(tmp_path / "in"), tmp_path / "out"
    )
    s_file = torch.load(tmp_path / "out" / liveportrait.RETARGETING_FILE, weights_only=True)
    assert list(s_file) == ["retarget_shoulder", "retarget_mouth", "retarget_eye"]
    assert list(s_file["retarget_eye"])[-1] == "module.mlp.10.bias"


def test_without_retargeting_file_the_base_is_imported_and_said(tmp_path, caplog):
    states = {g: s for g, s in tiny_states().items() if g in BASE_FILES}
    write_release(tmp_path / "in", states)
    with caplog.at_level(logging.WARNING):
        variables = liveportrait.import_checkpoint(tmp_path / "in")
    assert "imported the base networks only" in caplog.text
    assert sorted(variables["params"]) == sorted(BASE_FILES)
    liveportrait.export_checkpoint(variables, tmp_path / "out")
    assert not (tmp_path / "out" / "retargeting_models").exists()
    assert sorted(os.listdir(tmp_path / "out" / "base_models")) == sorted(BASE_FILES.values())


def test_animals_release_reads_and_writes_base_models_v1_1(tmp_path):
    files = write_release(tmp_path / "in", tiny_states(), base_dir="base_models_v1.1")
    stored = releases.import_release(
        "liveportrait_animals", tmp_path / "in", output=str(tmp_path / "w.safetensors")
    )
    variables = weights.load(stored)
    assert variables["model_config"]["base_dir"] == "base_models_v1.1"
    releases.export_release("liveportrait_animals", variables, tmp_path / "out")
    assert_same_files(tmp_path / "out", files, tmp_path / "in")
    with pytest.raises(ConversionError, match="no base_models/"):
        liveportrait.import_checkpoint(tmp_path / "in")  # the human release's layout


def _broken(tmp_path, group, change):
    """A tiny release with `change(state_dict)` applied to one group's state_dict."""
    states = tiny_states()
    change(states[group])
    write_release(tmp_path / "in", states)
    with pytest.raises(ConversionError) as e:
        liveportrait.import_checkpoint(tmp_path / "in")
    return str(e.value)


def _drop(key):
    return lambda sd: sd.pop(key)


def _add(key):
    return lambda sd: sd.update({key: np.zeros(3, np.float32)})


def _reshape(key):
    return lambda sd: sd.update({key: sd[key][..., :1]})


@pytest.mark.parametrize(
    "group, change, file, message",
    [
        ("warping", _drop("fourth.bias"), "warping_module.pth", "missing key 'fourth.bias'"),
        (
            "appearance",
            _drop("first.norm.num_batches_tracked"),
            "appearance_feature_extractor.pth",
            "missing key 'first.norm.num_batches_tracked'",
        ),
        ("spade", _add("fc.extra"), "spade_generator.pth", "unexpected key 'fc.extra'"),
        ("motion", _reshape("detector.fc_t.weight"), "motion_extractor.pth", "'detector.fc_t."),
        ("eye", _drop("mlp.4.bias"), "[retarget_eye]", "missing key 'module.mlp.4.bias'"),
        ("lip", _add("mlp.1.weight"), "[retarget_mouth]", "unexpected key 'module.mlp.1.weight'"),
        ("stitching", _reshape("mlp.2.weight"), "[retarget_shoulder]", "'module.mlp.2.weight'"),
    ],
    ids=["missing", "missing-counter", "unexpected", "shape", "s-missing", "s-extra", "s-shape"],
)
def test_bad_keys_are_errors_naming_file_and_key(tmp_path, group, change, file, message):
    text = _broken(tmp_path, group, change)
    assert file in text and message in text, text


def test_bad_layouts_are_errors_naming_the_path(tmp_path):
    with pytest.raises(ConversionError, match="not a directory"):
        liveportrait.import_checkpoint(tmp_path / "none")
    states = tiny_states()
    files = write_release(tmp_path / "in", states)
    path = os.path.join(tmp_path, "in", liveportrait.RETARGETING_FILE)
    torch_pickle.save(dict(files[path], extra={}), path)
    with pytest.raises(ConversionError, match="stitching_retargeting_module.pth: unexpected entry"):
        liveportrait.import_checkpoint(tmp_path / "in")
    # Retargeting MLPs for another keypoint count than M's.
    states["stitching"] = tiny_states()["lip"]
    write_release(tmp_path / "in", states)
    with pytest.raises(ConversionError, match=r"\[retarget_shoulder\].*need 24 -> 14"):
        liveportrait.import_checkpoint(tmp_path / "in")


def test_export_checks_the_sizes_it_writes(tmp_path):
    write_release(tmp_path / "in", tiny_states())
    variables = liveportrait.import_checkpoint(tmp_path / "in")
    config = dict(variables["model_config"])
    del config["warping"]  # the release's sizes assumed: the tiny W does not fit them
    with pytest.raises(ConversionError, match="warping_module.pth"):
        liveportrait.export_checkpoint(variables, tmp_path / "out", model_config=config)
    del variables["params"]["eye"]
    with pytest.raises(ConversionError, match="needs all of"):
        liveportrait.export_checkpoint(variables, tmp_path / "out2")


def test_import_and_export_commands_take_the_directory(tmp_path):
    files = write_release(tmp_path / "in", tiny_states())
    out = jaxtalk(
        "import",
        "--release=liveportrait",
        f"--checkpoint={tmp_path / 'in'}",
        f"--out={tmp_path / 'lp.safetensors'}",
    )
    assert out.returncode == 0, out.stderr
    assert "imported liveportrait" in out.stdout
    back = jaxtalk(
        "export",
        f"--weights={tmp_path / 'lp.safetensors'}",
        "--release=liveportrait",
        f"--out={tmp_path / 'out'}",
    )
    assert back.returncode == 0, back.stderr
    assert_same_files(tmp_path / "out", files, tmp_path / "in")
    bad = jaxtalk("import", "--release=liveportrait", f"--checkpoint={tmp_path / 'in/base_models'}")
    assert bad.returncode == 2 and "base_models: no base_models/" in bad.stderr
