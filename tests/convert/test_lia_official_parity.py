"""Parity of the LIA generator and AniTalker's stage 1 with the official code, run on CPU
torch, in float32 and float64: the official model (its init, perturbed everywhere) is saved
in the released layout, imported by jaxtalk and loaded by the official loading path, and
both run the same images at the released size (256).

The release builds ToFlow's identity grid in float32 whatever the model's dtype, and so does
jaxtalk (`identity_grid`), so float64 runs agree to rounding. Needs the official code, so it
only runs when told where it is (each test on its own):

    LIA_CODE=/path/to/LIA ANITALKER_CODE=/path/to/AniTalker/code \
        pytest -n 0 -s tests/convert/test_lia_official_parity.py

About a minute per test on two CPU cores (the official forward at 256 takes 15-30 s).
"""

import contextlib
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.convert import lia
from jaxtalk.models.anitalker.stage1 import AniTalkerMotion
from jaxtalk.models.lia.generator import LIAGenerator

LIA_CODE = os.environ.get("LIA_CODE")
ANITALKER_CODE = os.environ.get("ANITALKER_CODE")
# Bounds on the max abs difference of the rendered image and the codes.
TOLERANCE = {"float32": 5e-4, "float64": 1e-9}


@contextlib.contextmanager
def official_code(path):
    """The official `networks` package (LIA and AniTalker both name theirs so) importable
    from `path`, and gone again afterwards. The official decoder moves its grid to the GPU
    with `.cuda()`, which is the identity here."""
    torch = pytest.importorskip("torch")
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] == "networks"}
    sys.path.insert(0, path)
    cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self
    try:
        yield torch
    finally:
        torch.Tensor.cuda = cuda
        sys.path.remove(path)
        for k in [k for k in sys.modules if k.split(".")[0] == "networks"]:
            del sys.modules[k]
        sys.modules.update(saved)


def perturbed(torch, state, seed=0):
    """The official init moved everywhere (zero biases matter too), blur kernels as built,
    the flow heads scaled by 0.1: untrained ones warp by tanh of O(1) values, which
    amplifies rounding (torch float32 itself is then 2e-3 from torch float64), trained
    ones do not."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if not key.endswith(".kernel"):
            value = value + 0.05 * torch.randn(value.shape, generator=gen)
        out[key] = value * 0.1 if ".to_flows." in key and key.endswith("conv.weight") else value
    return out


def images(seed=0):
    rng = np.random.default_rng(seed)
    return [np.clip(rng.standard_normal((1, 256, 256, 3)) * 0.5, -1, 1) for _ in range(2)]


def to_torch(torch, x, dtype):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(dtype)


def jaxtalk_apply(model_cls, imported, dtype, *args):
    dtype = jnp.dtype(dtype)
    cfg = {k: v for k, v in imported["model_config"].items() if k != "kind"}
    model = model_cls(**cfg, dtype=dtype, param_dtype=dtype)
    params = jax.tree.map(lambda a: jnp.asarray(a, dtype), imported["params"])
    return model.apply({"params": params}, *(jnp.asarray(a, dtype) for a in args))


def report(name, label, got, want, dtype):
    err = float(np.max(np.abs(np.asarray(got) - np.asarray(want))))
    scale = float(np.max(np.abs(want)))
    print(f"{name} {label} {dtype}: max abs error {err:.2e} (values up to {scale:.2f})")
    assert np.asarray(got).dtype == np.dtype(dtype) and err < TOLERANCE[dtype], (label, err)


@pytest.mark.skipif(not LIA_CODE, reason="LIA_CODE (wyhsirius/LIA checkout) not set")
def test_lia_generator_matches_the_official_model(tmp_path):
    with official_code(LIA_CODE) as torch:
        from networks.generator import Generator

        official = Generator(256, 512, 20, 1).eval()
        official.load_state_dict(perturbed(torch, official.state_dict()), strict=True)
        torch.save({"gen": official.state_dict()}, tmp_path / "vox.pt")
        imported = lia.import_checkpoint(tmp_path / "vox.pt")
        source, driving = images()
        for name, torch_dtype in (("float32", torch.float32), ("float64", torch.float64)):
            official = official.to(torch_dtype)
            with torch.no_grad():
                want = official(
                    to_torch(torch, source, torch_dtype), to_torch(torch, driving, torch_dtype)
                )
            with jax.enable_x64(name == "float64"):
                got = jaxtalk_apply(LIAGenerator, imported, name, source, driving)["image"]
                report("lia", "image", got, want.numpy().transpose(0, 2, 3, 1), name)


@pytest.mark.skipif(not ANITALKER_CODE, reason="ANITALKER_CODE (official code/) not set")
def test_stage1_matches_the_official_model(tmp_path):
    """The flat 'lia.' file through the official `load_lightning_model` and jaxtalk's import;
    the HAL code, the motion code and the rendered image agree."""
    with official_code(ANITALKER_CODE) as torch:
        sys.path.insert(0, ANITALKER_CODE)
        try:
            from LIA_Model import LIA_Model
        finally:
            sys.path.remove(ANITALKER_CODE)
            sys.modules.pop("LIA_Model", None)

        init = LIA_Model(motion_dim=20, fusion_type="weighted_sum").state_dict()
        torch.save({"lia." + k: v for k, v in perturbed(torch, init).items()}, tmp_path / "s1.ckpt")
        official = LIA_Model(motion_dim=20, fusion_type="weighted_sum").eval()
        official.load_lightning_model(str(tmp_path / "s1.ckpt"))
        imported = lia.import_checkpoint(tmp_path / "s1.ckpt")
        source, driving = images(1)
        for name, torch_dtype in (("float32", torch.float32), ("float64", torch.float64)):
            official = official.to(torch_dtype)
            src, drv = (to_torch(torch, x, torch_dtype) for x in (source, driving))
            with torch.no_grad():
                wa, alpha, feats = official.get_start_direction_code(src, drv, drv, drv)
                want = official.render(wa, alpha, feats)
            with jax.enable_x64(name == "float64"):
                got = jaxtalk_apply(AniTalkerMotion, imported, name, source, driving)
                report("stage1", "h", got["source"]["h"], wa.numpy(), name)
                report("stage1", "alpha", got["driving"]["alpha"], alpha.numpy(), name)
                report("stage1", "image", got["image"], want.numpy().transpose(0, 2, 3, 1), name)
