r"""jaxtalk sweep: evaluate a grid of checkpoints x test sets x metrics x modes.

  jaxtalk sweep --runs=runs/s1,runs/s1_big --steps=all \
      --test_sets=hdtf,voxceleb1 --data_root=data --metrics=psnr,ssim,lpips_alex,csim \
      --num_batches=32 --out_dir=sweeps/stage1

Rows are appended to OUT_DIR/results.jsonl and rendered as results.csv, results.md and
<metric>_vs_step.png (one line per run / test set / mode). Resumable: a cell (run, step,
test set, mode) whose metrics are already in the results is not recomputed, so a killed
or extended sweep is rerun with the same command. Distributable: with --process_index=I
--process_count=N (or under launch/local.py) process I takes cells I, I+N, ... and appends
to OUT_DIR/results.p<I>.jsonl; every process renders from all the files, and
--render_only redraws the table and plots once all have finished.

--steps: all, last, or N,M. --test_sets: comma-separated NAME=DIR[:SPLIT] or named sets
(hdtf, vfhq, voxceleb1, voxceleb2, celebvhq, talkinghead1kh, synthetic) under --data_root.
"""

from absl import flags

from jaxtalk import fs
from jaxtalk.errors import InputError
from jaxtalk.evaluate import cli_options

_RUNS = flags.DEFINE_list("runs", [], "training run directories")
_STEPS = flags.DEFINE_string("steps", "all", "all | last | N,M,...")
_TEST_SETS = flags.DEFINE_list("test_sets", [], "NAME=DIR[:SPLIT] or named sets")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "results, table and plots go here")
_PROCESS_INDEX = flags.DEFINE_integer("process_index", None, "this process's share of cells")
_PROCESS_COUNT = flags.DEFINE_integer("process_count", None, "processes sharing the sweep")
_RENDER_ONLY = flags.DEFINE_bool("render_only", False, "only redraw table and plots")
_FLAGS = cli_options.define(__name__)


def main(argv):
    from jaxtalk.evaluate import eval_sets, sweep

    if _RENDER_ONLY.value:
        cli_options.check_args(argv, out_dir=_OUT_DIR.value)
        if not fs.glob(_OUT_DIR.value, "results*.jsonl"):  # a mistyped --out_dir, not a sweep
            raise InputError(f"--out_dir={_OUT_DIR.value}: no results*.jsonl to render")
        print("wrote " + ", ".join(sweep.render(_OUT_DIR.value)[1]))
        return
    cli_options.check_args(
        argv, out_dir=_OUT_DIR.value, runs=_RUNS.value, test_sets=_TEST_SETS.value
    )
    try:
        index, count = sweep.process_identity(_PROCESS_INDEX.value, _PROCESS_COUNT.value)
        summary = sweep.run_sweep(
            _RUNS.value,
            [eval_sets.parse(s, _FLAGS.data_root.value) for s in _TEST_SETS.value],
            _FLAGS.metrics.value,
            _OUT_DIR.value,
            steps=_STEPS.value,
            modes=_FLAGS.modes.value or None,
            batch_size=_FLAGS.batch_size.value,
            num_batches=_FLAGS.num_batches.value,
            weights_dir=_FLAGS.weights_dir.value,
            metric_options=cli_options.metric_options(_FLAGS.metric_options.value),
            process_index=index,
            process_count=count,
            seed=_FLAGS.seed.value,
            log=print,  # skipped metrics and the cells to compute; per-cell lines: --verbosity=0
        )
    except ValueError as e:  # SweepError, EvalSetError, bad metric options
        raise InputError(str(e)) from None
    print(f"\n{_OUT_DIR.value}/results.md:\n")
    print(fs.read_text(fs.join(_OUT_DIR.value, "results.md")))
    print(
        f"computed {summary.computed} of this process's {summary.cells} cells; "
        f"{len(summary.skipped_metrics)} metric(s) skipped"
        + (f" ({', '.join(sorted(summary.skipped_metrics))})" if summary.skipped_metrics else "")
    )
    print("wrote " + ", ".join(summary.outputs))
