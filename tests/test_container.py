"""The container image: the Dockerfile's variants and the xpk launcher that builds it."""

import os
import re
import subprocess

from tests.train.helpers import REPO


def test_dockerfile_maps_each_variant_to_its_jax_build():
    text = open(os.path.join(REPO, "Dockerfile")).read()
    assert "ARG JAX_VARIANT=cpu" in text
    for variant, package in (("cpu", "jax[cpu]"), ("cuda", "jax[cuda12]"), ("tpu", "jax[tpu]")):
        assert re.search(rf'{variant}\) jax="{re.escape(package)}"', text), variant
    assert 'ENTRYPOINT ["jaxtalk"]' in text
    ignored = open(os.path.join(REPO, ".dockerignore")).read().split()
    assert ".venv" in ignored and ".git" in ignored  # the build context stays the source


def test_xpk_launcher_builds_pushes_and_runs_the_image(tmp_path):
    """docker and xpk replaced by scripts that record their arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("docker", "xpk"):
        script = bin_dir / tool
        script.write_text(f'#!/bin/bash\nprintf "%s\\n" "{tool} $*" >> "{tmp_path}/calls"\n')
        script.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    image = "us-docker.pkg.dev/p/r/jaxtalk:tpu"
    args = ["bash", "launch/xpk.sh", "c1", "v5p-16", "2", image, "anitalker_stage1:paper"]
    subprocess.run(args + ["gs://b/run", "--config.batch_size=8"], env=env, cwd=REPO, check=True)
    build, push, create = (tmp_path / "calls").read_text().splitlines()
    assert (
        build == f"docker build --build-arg JAX_VARIANT=tpu -t {image} -f {REPO}/Dockerfile {REPO}"
    )
    assert push == f"docker push {image}"
    assert create.startswith("xpk workload create --cluster=c1 --tpu-type=v5p-16 --num-slices=2")
    assert f"--docker-image={image}" in create
    assert "jaxtalk train --config=anitalker_stage1:paper --workdir=gs://b/run" in create
    assert create.endswith("--config.dcn_mesh.data=2 --config.batch_size=8")

    (tmp_path / "calls").unlink()
    env["JAXTALK_SKIP_BUILD"] = "1"
    subprocess.run(args + ["gs://b/run"], env=env, cwd=REPO, check=True)
    (only,) = (tmp_path / "calls").read_text().splitlines()
    assert only.startswith("xpk workload create")
