r"""jaxtalk train: train a recipe from its config, resuming from the workdir if it has checkpoints.

Example:
  jaxtalk train --config=configs/toy_regression.py:tiny --workdir=runs/toy \
      --config.batch_size=32 --config.mesh.fsdp=2

--config takes a config file and a variant after ':' (a bare recipe name such as
`anitalker_stage1:tiny` is looked up in the installed configs package). Any config key
can be overridden with --config.<key>=<value>; an unknown key is an error.
"""

from absl import flags

from jaxtalk.commands import config_flag
from jaxtalk.errors import InputError

_CONFIG = config_flag.define()
_WORKDIR = flags.DEFINE_string(
    "workdir",
    None,
    "run directory: checkpoints, TensorBoard, config; an existing run there is resumed",
)


def parse_flags(argv):
    return config_flag.parse(argv, required=("workdir",))


def main(argv):
    from jaxtalk.train.train import ConfigError, train

    config_flag.reject_positional(argv)
    try:
        train(_CONFIG.value, _WORKDIR.value)
    except ConfigError as e:
        raise InputError(str(e)) from None
