r"""jaxtalk eval: evaluate one checkpoint of a training run on one test set.

  jaxtalk eval --workdir=runs/s1 --test_set=synthetic=data/syn64:test \
      --metrics=psnr,ssim,lpips_alex,csim --modes=self,cross --num_batches=16 --json_out=eval.json

--step picks the checkpoint (default: the latest). --test_set is NAME=DIR[:SPLIT] (DIR from
`jaxtalk prepare`), or a named set (hdtf, vfhq, voxceleb1, voxceleb2, celebvhq,
talkinghead1kh, synthetic; split `test`) found as DATA_ROOT/NAME with --data_root. Metrics that need imported weights
(lpips_*, csim, fid, lse) are skipped with a message naming the file and the `jaxtalk
import` command when the weights are missing; the others still run. Prints a markdown table;
--json_out also writes the rows.
"""

import json

from absl import flags, logging

from jaxtalk import fs
from jaxtalk.errors import InputError
from jaxtalk.evaluate import cli_options

_WORKDIR = flags.DEFINE_string("workdir", None, "training run directory")
_STEP = flags.DEFINE_integer("step", None, "checkpoint step (default: the latest)")
_TEST_SET = flags.DEFINE_string("test_set", None, "NAME=DIR[:SPLIT] or a named set")
_JSON_OUT = flags.DEFINE_string("json_out", None, "also write the rows to this JSON file")
_FLAGS = cli_options.define(__name__)


def main(argv):
    from jaxtalk.evaluate import eval_sets, registry, report, sweep

    cli_options.check_args(argv, workdir=_WORKDIR.value, test_set=_TEST_SET.value)
    try:
        sweep.check_metric_names(_FLAGS.metrics.value)
        test_set = eval_sets.parse(_TEST_SET.value, _FLAGS.data_root.value)
        step = sweep.resolve_steps(
            _WORKDIR.value, "last" if _STEP.value is None else str(_STEP.value)
        )[0]
        metrics, skipped = registry.create_many(
            _FLAGS.metrics.value,
            _FLAGS.weights_dir.value,
            cli_options.metric_options(_FLAGS.metric_options.value),
        )
        for name, why in skipped.items():
            logging.warning("skipping metric %s: %s", name, why)
        evaluator = sweep.Evaluator(
            metrics,
            batch_size=_FLAGS.batch_size.value,
            num_batches=_FLAGS.num_batches.value,
            mesh=sweep.local_mesh(_FLAGS.batch_size.value),
            seed=_FLAGS.seed.value,
            log=print,  # a metric a mode cannot compute
            batch_bar=True,
        )
        modes = _FLAGS.modes.value or evaluator.modes(_WORKDIR.value, step, test_set)
        rows = [
            evaluator.evaluate(_WORKDIR.value, step, test_set, mode, sorted(metrics))
            for mode in modes
        ]
    except ValueError as e:  # SweepError, EvalSetError, bad metric options
        raise InputError(str(e)) from None
    print(report.markdown_table(rows))
    if skipped:
        print(
            f"{len(skipped)} metric(s) skipped (missing weights or bad options): "
            f"{', '.join(sorted(skipped))}"
        )
    if _JSON_OUT.value:
        fs.write_text(
            _JSON_OUT.value, json.dumps({"rows": rows, "skipped_metrics": skipped}, indent=1)
        )
        print(f"wrote {_JSON_OUT.value}")
