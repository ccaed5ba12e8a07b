r"""jaxtalk train: train a recipe from its config, resuming from the workdir if it has checkpoints.

Example:
  jaxtalk train --config=configs/toy_regression.py:tiny --workdir=runs/toy \
      --config.batch_size=32 --config.mesh.fsdp=2

--config takes a config file and a variant after ':' (a bare recipe name such as
`anitalker_stage1:tiny` is looked up in the installed configs package). Any config key
can be overridden with --config.<key>=<value>; an unknown key is an error.

On SIGTERM (a preempted TPU VM or spot GPU) every process saves a checkpoint at the same
step and the command exits 0; run it again to resume. A damaged newest checkpoint is
reported and the next older one resumed.
"""

from absl import flags

from jaxtalk.commands import config_flag

_CONFIG = config_flag.define()
_WORKDIR = flags.DEFINE_string(
    "workdir",
    None,
    "run directory: checkpoints, TensorBoard, config; an existing run there is resumed",
)


def parse_flags(argv):
    return config_flag.parse(argv, required=("workdir",))


def main(argv):
    from jaxtalk.train.train import train

    config_flag.reject_positional(argv)
    # A ConfigError or a checkpoint no step of which restores is an InputError: one line.
    # Preempted (SIGTERM), train returns after saving, and the command exits 0.
    train(_CONFIG.value, _WORKDIR.value)
