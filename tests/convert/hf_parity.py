"""Helpers for the parity tests against diffusers / transformers modules (CPU torch)."""

import numpy as np


def perturbed(module, seed: int, scale: float = 0.1):
    """`module` in eval mode with every parameter moved by scale * N(0, 1): norms leave
    their ones and zeros and zero-initialised layers their zeros, so that a wrong mapping
    cannot hide behind an identity or a zero."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module.eval()


def reference(build, precision: str):
    """`build()`'s torch module (its init seeded) in `precision`, perturbed."""
    import torch

    torch.manual_seed(0)
    return perturbed(build().to(getattr(torch, precision)), seed=0)


def hf_fields(config: dict) -> dict:
    """A config.json's fields without its class markers (for a Config constructor)."""
    return {
        k: v for k, v in config.items() if k not in ("_class_name", "architectures", "model_type")
    }


def numpy_state(module) -> dict:
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def errors(got, want) -> tuple[float, float]:
    """(max abs difference, relative L2 difference) of two arrays."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    diff = got - want
    return float(np.abs(diff).max()), float(np.linalg.norm(diff) / np.linalg.norm(want))


def check(name: str, precision: str, found: dict) -> None:
    """Prints each output's errors (pytest -s) and asserts the bounds: max abs 1e-9 in
    float64, relative L2 1e-5 in float32."""
    print(
        f"\n{name} {precision}: "
        + ", ".join(f"{k} max {a:.2e} rel {r:.2e}" for k, (a, r) in found.items())
    )
    for output, (abs_err, rel_err) in found.items():
        assert abs_err < 1e-9 if precision == "float64" else rel_err < 1e-5, output
