"""`jaxtalk import` and `jaxtalk export` end to end, through the command line."""

import numpy as np

from jaxtalk.convert import torch_pickle, weights
from tests.convert.test_torchvision_vgg import torchvision_state_dict
from tests.test_cli import jaxtalk
from tests.train.helpers import run_cli, train_command


def test_import_then_export_round_trips_a_release(tmp_path):
    sd = torchvision_state_dict("vgg16", np.random.default_rng(0))
    torch_pickle.save(sd, tmp_path / "vgg16.pth")
    out = jaxtalk(
        "import",
        "--release=vgg16",
        f"--checkpoint={tmp_path / 'vgg16.pth'}",
        f"--out={tmp_path / 'vgg16.safetensors'}",
    )
    assert out.returncode == 0, out.stderr
    assert "imported vgg16" in out.stdout and "14.71M values" in out.stdout
    back = jaxtalk(
        "export",
        f"--weights={tmp_path / 'vgg16.safetensors'}",
        "--release=vgg16",
        f"--out={tmp_path / 'back.pth'}",
    )
    assert back.returncode == 0, back.stderr
    exported = torch_pickle.load_state_dict(tmp_path / "back.pth")
    for k, v in sd.items():
        if k.startswith("features."):
            np.testing.assert_array_equal(exported[k], v, err_msg=k)


def test_import_errors_name_the_problem(tmp_path):
    sd = torchvision_state_dict("vgg16", np.random.default_rng(0))
    sd["features.0.weight"] = sd["features.0.weight"][:, :, :2]  # wrong shape
    del sd["features.2.bias"]
    torch_pickle.save(sd, tmp_path / "bad.pth")
    out = jaxtalk(
        "import",
        "--release=vgg16",
        f"--checkpoint={tmp_path / 'bad.pth'}",
        f"--out={tmp_path / 'x.safetensors'}",
    )
    assert out.returncode == 2
    assert "bad.pth" in out.stderr and "missing key 'features.2.bias'" in out.stderr
    assert "features.0.weight" in out.stderr and "Traceback" not in out.stderr
    missing = jaxtalk("import", "--release=lia", f"--checkpoint={tmp_path / 'none.pt'}")
    assert missing.returncode == 2 and "none.pt: no such file" in missing.stderr


def test_export_pulls_a_group_out_of_a_training_run(tmp_path):
    run_cli(train_command(tmp_path / "run", "--config.total_steps=20"))
    out = jaxtalk(
        "export",
        f"--workdir={tmp_path / 'run'}",
        "--group=model",
        f"--out={tmp_path / 'model.safetensors'}",
    )
    assert out.returncode == 0, out.stderr
    stored = weights.load(tmp_path / "model.safetensors")
    assert stored["params"]["hidden_0"]["kernel"].shape == (64, 128)
    bad = jaxtalk(
        "export",
        f"--workdir={tmp_path / 'run'}",
        "--group=nope",
        f"--out={tmp_path / 'x.safetensors'}",
    )
    assert bad.returncode == 2 and "no parameter group 'nope'" in bad.stderr
