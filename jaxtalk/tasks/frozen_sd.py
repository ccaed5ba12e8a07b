"""The frozen groups of the latent video diffusion tasks (AniPortrait, MegActor): the SD VAE
and CLIP image tower from imported weights files, and in stage 2 the stage-1 networks (the
`base` group) from a stage-1 run or an imported release file."""

from __future__ import annotations

from jaxtalk import fs
from jaxtalk.models.latent_diffusion.frames import FROZEN_NETWORKS


class FrozenSDParts:
    """Mixin for a two-stage diffusion Task with `config`, `stage` and a `pipe` whose `vae` /
    `image_encoder` are None when the run has none. A subclass names its release
    (`FAMILY`, the `jaxtalk import --release` of its base file), the image tower's release and
    turns the base run's or file's variables into its `base` group (`base_group`)."""

    FAMILY: str
    IMAGE_ENCODER_RELEASE: str

    def _weights_file(self, key: str, release: str) -> str:
        from jaxtalk.convert import weights

        path = self.config.get(key) or str(weights.weights_path(release))
        if not fs.exists(path):
            raise ValueError(
                f"{key}: no weights at {path}: run `jaxtalk import --release={release} ...` "
                f"or set --config.{key}"
            )
        return fs.absolute(path)

    def _base_source(self) -> dict:
        base = self.config.base
        if base.workdir:
            from jaxtalk.train import checkpoints

            workdir = fs.absolute(base.workdir)
            step = base.step if base.step >= 0 else checkpoints.resolve_step(workdir)
            return {"workdir": workdir, "step": int(step)}
        if base.weights:
            return {"weights": fs.absolute(base.weights)}
        raise ValueError(
            f"stage 2 needs the stage-1 networks: set --config.base.workdir=RUN (a stage-1 "
            f"run of {self.FAMILY}) or --config.base.weights=FILE (`jaxtalk import "
            f"--release={self.FAMILY}`)"
        )

    def frozen_sources(self):
        out = {}
        if self.pipe.vae is not None:
            out["vae"] = {"weights": self._weights_file("vae_weights", "sd_vae")}
        if self.pipe.image_encoder is not None:
            file = self._weights_file("image_encoder_weights", self.IMAGE_ENCODER_RELEASE)
            out["image_encoder"] = {"weights": file}
        if self.stage == "stage2":
            out["base"] = self._base_source()
        return out

    def load_frozen(self, group, source):
        from jaxtalk.convert import weights

        if group in FROZEN_NETWORKS:
            return {"params": weights.load(source["weights"])["params"]}
        if group != "base":
            return super().load_frozen(group, source)
        if "workdir" in source:
            from jaxtalk.train import checkpoints

            variables = checkpoints.group_variables(source["workdir"], "model", source["step"])
        else:
            variables = weights.load(source["weights"])
        return self.base_group(variables)

    def base_group(self, variables: dict) -> dict:
        """The `base` group from a stage-1 run's `model` variables or a release file's."""
        raise NotImplementedError
