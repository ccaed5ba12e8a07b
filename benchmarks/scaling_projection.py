"""Projected step time of the `paper` recipes on TPU v5p and H100 at 8, 64 and 256 chips,
for data, FSDP and hybrid meshes (the method: jaxtalk/train/scaling.py).

Each recipe's real training step (the loop's `jit_train_step` on the task's real batch, read
from the embedded synthetic set resized to the recipe's frames) is compiled, never run, on
16 simulated CPU devices: data=8, fsdp=8 and data=2 x fsdp=8 meshes at the per-device batch
the recipe has on 8 chips (its global batch / 8, at least 1). The compiled per-device
programs give the FLOPs and every collective (bytes, device group); those and the chips'
data-sheet rates give each projection. Prints one JSON row per compile and per projection,
then the table; --out keeps the rows (the README's table: --table=FILE), adding to those
already in the file (a recipe and mesh compiled again replace theirs).

  python benchmarks/scaling_projection.py [--recipes anitalker_stage1:paper,...]
      [--meshes data,fsdp,hybrid] [--mfu 0.45] [--hlo_dir DIR]
      [--out benchmarks/results/scaling_projection.json]
  python benchmarks/scaling_projection.py --table benchmarks/results/scaling_projection.json

XLA's CPU backend compiles at -O0 here (--fast_compile, the default): collectives and the
FLOP count come from the HLO passes before code generation and are the same at -O2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time

if "jax" not in sys.modules:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=16"
        os.environ["XLA_FLAGS"] = flags.strip()

import _runs  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from _timing import emit, machine_row  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

from jaxtalk.train import communication, scaling, sharding  # noqa: E402

# recipe -> frame side the loader resizes the synthetic set to (the recipe's own)
RECIPES = {
    "anitalker_stage1:paper": 256,
    "liveportrait:paper": 512,
    "aniportrait:paper_stage1": 512,
    "aniportrait:paper_stage2": 512,
    "megactor:paper_stage1": 512,
}
CHIP_COUNTS = (8, 64, 256)


def recipe_config(recipe: str, data_dir: str, side: int, devices: int):
    """The recipe's config on the synthetic set, at its 8-chip per-device batch x `devices`."""
    name, variant = recipe.split(":")
    config = importlib.import_module(f"configs.{name}").get_config(variant)
    per_device = max(1, config.batch_size // 8)
    config.batch_size = per_device * devices
    config.grad_accum_steps = 1
    config.data.data_dir = data_dir
    config.data.mixture = ""
    config.data.image_size = side
    config.data.samples_per_clip = 64  # a small set still fills the batch
    return config, per_device


def stand_in_weights(weights_dir: str) -> None:
    """Random weights of the frozen loss networks the recipes read (VGG19, ArcFace R100), in
    `jaxtalk import`'s files: only their shapes matter to a compile."""
    import jax.numpy as jnp  # noqa: PLC0415

    from jaxtalk.convert import weights  # noqa: PLC0415
    from jaxtalk.losses.perceptual import LAYERS  # noqa: PLC0415
    from jaxtalk.models.metric_nets.iresnet import IResNet  # noqa: PLC0415
    from jaxtalk.models.vgg import VGGFeatures  # noqa: PLC0415

    nets = {
        "vgg19": (VGGFeatures(config="vgg19", output_layers=tuple(LAYERS)), 224),
        "arcface_r100": (IResNet(), 112),
    }
    for release, (net, side) in nets.items():
        path = weights.weights_path(release, weights_dir)
        if not os.path.exists(path):
            variables = jax.jit(net.init)(jax.random.PRNGKey(0), jnp.zeros((1, side, side, 3)))
            weights.save(jax.device_get(variables), path, release=release)


def compile_recipe(recipe: str, mesh_kind: str, data_dir: str, fast: bool, hlo_dir: str) -> dict:
    shape = scaling.COMPILED_MESHES[mesh_kind]
    devices = shape["data"] * shape["fsdp"]
    config, per_device = recipe_config(recipe, data_dir, RECIPES[recipe], devices)
    grid = np.array(jax.devices()[:devices]).reshape(shape["data"], shape["fsdp"], 1)
    mesh = Mesh(grid, ("data", "fsdp", "tensor"))
    rules = tuple(tuple(r) for r in config.logical_axis_rules)
    start = time.perf_counter()
    built = scaling.task_step(config, mesh, rules)
    with sharding.activation_context(mesh, rules):  # as the loop compiles its step
        options = {"xla_backend_optimization_level": 0} if fast else None
        compiled = built.step.lower(built.state, built.batch).compile(options)
    ops = communication.collective_ops(compiled)
    if hlo_dir:  # to read where the bytes come from (op_name metadata)
        os.makedirs(hlo_dir, exist_ok=True)
        name = f"{recipe.replace(':', '_')}_{mesh_kind}.hlo.txt"
        with open(os.path.join(hlo_dir, name), "w") as f:
            f.write(compiled.as_text())
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(built.state.params))
    return emit(
        {
            "run": "compile",
            "recipe": recipe,
            "mesh": mesh_kind,
            "mesh_shape": shape,
            "per_device_batch": per_device,
            "dtype": config.dtype,
            "params": params,
            "flops_per_device": float(compiled.cost_analysis().get("flops", 0.0)),
            "collectives": [[o.kind, o.bytes, o.group_size, o.operands] for o in ops],
            "compile_s": round(time.perf_counter() - start, 1),
        }
    )


def projections(row: dict, mfu: float) -> list[dict]:
    ops = [communication.Collective(*c) for c in row["collectives"]]
    out = []
    for chip_name, chip in scaling.CHIPS.items():
        for chips in CHIP_COUNTS:
            p = scaling.project(
                row["flops_per_device"], ops, row["mesh_shape"], row["mesh"], chips, chip, mfu
            )
            out.append({"recipe": row["recipe"], "mesh": row["mesh"], "chip": chip_name,
                        "chips": chips, **{k: round(v, 5) for k, v in p.items()}})  # fmt: skip
    return out


def table(rows: list[dict], mfu: float) -> str:
    """Markdown: one line per recipe and mesh: the compute per step on each chip kind, then
    per chip kind and count the weak-scaling efficiency (compute / step time) without and
    with full overlap of communication and compute."""
    head = ["recipe", "mesh", "params", "GFLOP/chip", "GB moved/chip"]
    head += [f"compute ms {c}" for c in scaling.CHIPS]
    head += [f"{c} x{n}" for c in scaling.CHIPS for n in CHIP_COUNTS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        if row.get("run") != "compile":
            continue
        found = projections(row, mfu)
        cells = [
            row["recipe"],
            f"{row['mesh']} {'x'.join(str(n) for n in row['mesh_shape'].values())}, "
            f"batch {row['per_device_batch']}/chip",
            f"{row['params'] / 1e6:,.0f} M",
            f"{row['flops_per_device'] / 1e9:,.0f}",
            f"{sum(c[1] for c in row['collectives']) / 1e9:.2f}",
        ]
        cells += [
            f"{next(p['compute_s'] for p in found if p['chip'] == c) * 1e3:,.0f}"
            for c in scaling.CHIPS
        ]
        for p in found:
            low, high = p["efficiency_serial"], p["efficiency_overlapped"]
            cells.append(
                f"{low:.0%}" if round(low, 2) == round(high, 2) else f"{low:.0%}-{high:.0%}"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--meshes", default="data,fsdp,hybrid")
    ap.add_argument("--mfu", type=float, default=0.45, help="assumed for the compute time")
    ap.add_argument("--data_dir", default="", help="a synthetic set (default: made in /tmp)")
    ap.add_argument("--fast_compile", type=int, default=1, help="XLA CPU -O0 (same HLO)")
    ap.add_argument("--out", default="")
    ap.add_argument("--hlo_dir", default="", help="also write each compiled program's HLO here")
    ap.add_argument("--table", default="", help="print the table of a saved run")
    args = ap.parse_args()
    if args.table:
        with open(args.table) as f:
            print(table(json.load(f)["rows"], args.mfu), end="")
        return
    scratch = os.path.join(tempfile.gettempdir(), "jaxtalk_scaling")
    data_dir = args.data_dir or _runs.synthetic_set(
        os.path.join(scratch, "data"), identities=8, held_out=2
    )
    os.environ["JAXTALK_WEIGHTS_DIR"] = os.path.join(scratch, "weights")
    stand_in_weights(os.environ["JAXTALK_WEIGHTS_DIR"])
    rows = [emit(machine_row())]
    if args.out and os.path.exists(args.out):  # a run adds to (or redoes rows of) a saved one
        with open(args.out) as f:
            rows = [r for r in json.load(f)["rows"] if r.get("run") == "compile"] + rows
    for recipe in args.recipes.split(","):
        for mesh_kind in args.meshes.split(","):
            rows = [r for r in rows if (r.get("recipe"), r.get("mesh")) != (recipe, mesh_kind)]
            row = compile_recipe(recipe, mesh_kind, data_dir, bool(args.fast_compile), args.hlo_dir)
            rows.append(row)
            for p in projections(row, args.mfu):
                emit({"run": "projection", **p})
            if args.out:  # after every compile: a long run keeps what it has
                with open(args.out, "w") as f:
                    json.dump({"mfu": args.mfu, "rows": rows}, f, indent=1)
    print(table(rows, args.mfu), end="")


if __name__ == "__main__":
    main()
