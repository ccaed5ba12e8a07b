"""Imports point one way: a module may import only from its own layer or a lower one.

This test is the source of truth for the layer order (CONTRIBUTING.md, "Import direction").
It parses every .py under jaxtalk/ and data_pipelines/ with `ast`, takes every Import and
ImportFrom node (those inside functions too), maps both ends to a layer and lists every
upward import.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Lowest first. A module may import from its own layer or any lower one.
LAYERS = (
    (
        "jaxtalk.errors",
        "jaxtalk.discovery",
        "jaxtalk.fs",
        "jaxtalk.optional",
        "jaxtalk.progress",
        "jaxtalk.heap",
        "jaxtalk.lapack_threads",
        "jaxtalk.compile_cache",
    ),
    ("jaxtalk.models", "jaxtalk.diffusion", "jaxtalk.media"),
    ("jaxtalk.losses",),
    ("jaxtalk.export", "jaxtalk.convert"),
    ("jaxtalk.train",),
    ("jaxtalk.evaluate",),
    ("jaxtalk.tasks", "jaxtalk.inference"),
    ("jaxtalk.commands", "jaxtalk.cli", "jaxtalk.demo", "jaxtalk.app"),
)

# Same-layer pairs that must not import each other: (importer, imported).
FORBIDDEN = (
    ("jaxtalk.export", "jaxtalk.convert"),
    ("jaxtalk.inference", "jaxtalk.tasks"),
    ("jaxtalk.tasks", "jaxtalk.inference"),
)

# data_pipelines sits beside the layers: it may import only these from jaxtalk ...
DATA_PIPELINES_MAY_IMPORT = (
    "jaxtalk.media",
    "jaxtalk.errors",
    "jaxtalk.fs",
    "jaxtalk.optional",
    "jaxtalk.progress",
    "jaxtalk.heap",
)
# ... and only these jaxtalk packages may import data_pipelines.
MAY_IMPORT_DATA_PIPELINES = (
    "jaxtalk.train",
    "jaxtalk.tasks",
    "jaxtalk.evaluate",
    "jaxtalk.commands",
    # the AniPortrait animator extracts a portrait's face mesh with the same optional
    # MediaPipe detector `jaxtalk prepare --landmarks_model` uses (data_pipelines.landmarks)
    "jaxtalk.inference.aniportrait",
)

# configs/ may import only these (what it imports today: module constants and the released
# diffusion pairings of jaxtalk.diffusion.recipes), and only jaxtalk.commands (which reads
# recipes for the command line) imports configs/.
CONFIGS_MAY_IMPORT = (
    "configs",
    "jaxtalk.models.anitalker.stage2",
    "jaxtalk.models.aniportrait.pose_guider",
    "jaxtalk.models.latent_diffusion.unet",
    "jaxtalk.models.megactor.denoiser",
    "jaxtalk.models.megactor.driven_encoder",
    "data_pipelines.loaders",
    "jaxtalk.diffusion.recipes",
)
MAY_IMPORT_CONFIGS = ("jaxtalk.commands",)


def _under(name, prefix):
    return name == prefix or name.startswith(prefix + ".")


def _matches(name, prefixes):
    return any(_under(name, p) for p in prefixes)


def layer_of(name):
    for i, prefixes in enumerate(LAYERS):
        if _matches(name, prefixes):
            return i
    return None


def _module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts), path.name == "__init__.py"


def imports_of(path):
    """Absolute names of everything `path` imports (relative imports resolved)."""
    module, is_package = _module_name(path)
    package = module if is_package else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module
            # `from jaxtalk import tasks` imports jaxtalk.tasks: name each imported member.
            if base in ("jaxtalk", "data_pipelines"):
                for alias in node.names:
                    yield node.lineno, f"{base}.{alias.name}"
            else:
                yield node.lineno, base


def _files(*dirs):
    for d in dirs:
        yield from sorted((ROOT / d).rglob("*.py"))


def violations(dirs=("jaxtalk", "data_pipelines", "configs")):
    found = []
    for path in _files(*dirs):
        module, _ = _module_name(path)
        rel = path.relative_to(ROOT)
        for lineno, name in imports_of(path):
            if not (
                _under(name, "jaxtalk") or _under(name, "data_pipelines") or _under(name, "configs")
            ):
                continue
            where = f"{rel}:{lineno}: {module} -> {name}"
            if _under(module, "configs"):
                if not _matches(name, CONFIGS_MAY_IMPORT):
                    found.append(
                        where + " (configs may import only %s)" % ", ".join(CONFIGS_MAY_IMPORT)
                    )
                continue
            if _under(module, "data_pipelines"):
                if _under(name, "jaxtalk") and not _matches(name, DATA_PIPELINES_MAY_IMPORT):
                    found.append(
                        where
                        + f" (data_pipelines may import only {', '.join(DATA_PIPELINES_MAY_IMPORT)})"
                    )
                continue
            if _under(name, "data_pipelines"):
                if not _matches(module, MAY_IMPORT_DATA_PIPELINES):
                    found.append(
                        where
                        + " (data_pipelines is imported only by %s)"
                        % ", ".join(MAY_IMPORT_DATA_PIPELINES)
                    )
                continue
            if _under(name, "configs"):
                if not _matches(module, MAY_IMPORT_CONFIGS):
                    found.append(where + " (configs/ is imported only by jaxtalk.commands)")
                continue
            if name == "jaxtalk" or module == "jaxtalk":
                continue  # the top-level package itself
            src, dst = layer_of(module), layer_of(name)
            if src is None:
                found.append(where + " (module not in any layer: add it to LAYERS)")
                continue
            if dst is None:
                found.append(where + " (imported package not in any layer: add it to LAYERS)")
                continue
            if dst > src:
                found.append(where + f" (upward: layer {src} imports layer {dst})")
            elif any(_under(module, a) and _under(name, b) for a, b in FORBIDDEN):
                found.append(where + " (forbidden within its layer)")
    return found


def test_imports_point_one_way():
    found = violations()
    assert not found, f"{len(found)} import(s) point the wrong way:\n" + "\n".join(found)


@pytest.mark.parametrize("package", ["jaxtalk/inference", "jaxtalk/evaluate"])
def test_inference_and_evaluation_never_import_a_recipe(package):
    found = [
        f"{path.relative_to(ROOT)}:{lineno}: {name}"
        for path in _files(package)
        for lineno, name in imports_of(path)
        if _under(name, "jaxtalk.tasks")
    ]
    assert not found, "\n".join(found)


def test_the_check_catches_upward_imports():
    assert layer_of("jaxtalk.models.layers.conv") < layer_of("jaxtalk.train.task")
    assert layer_of("jaxtalk.train") < layer_of("jaxtalk.evaluate") < layer_of("jaxtalk.tasks")
    assert layer_of("jaxtalk.tasks") == layer_of("jaxtalk.inference")
    assert layer_of("jaxtalk.trainer") is None
