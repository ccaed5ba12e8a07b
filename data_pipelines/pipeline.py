"""The preparation driver: parsed clip specs -> resumable shards -> dataset info, with a report."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from absl import logging

from data_pipelines import info as info_lib
from data_pipelines import shard_writer
from data_pipelines.clip_spec import ClipSpec, SkipReport
from data_pipelines.process import ProcessConfig, process_clip
from jaxtalk import progress


def prepare(
    specs: list[ClipSpec],
    parse_report: SkipReport,
    out_dir: str,
    *,
    name: str,
    cfg: ProcessConfig,
    clips_per_shard: int = 64,
    num_workers: int = 0,
    process_fn=None,
    log=logging.info,
) -> dict[str, Any]:
    """Processes `specs` into `out_dir` (skipping finished shards) and writes the info file.

    `log` gets the opening line and the final report; a progress bar (on a terminal) counts
    the clips and each finished shard's line goes to the absl log.
    """
    t0 = time.time()
    process_fn = process_fn or process_clip  # looked up at call time (tests patch it)
    identities = sorted({s.identity for s in specs})
    identity_index = {ident: i for i, ident in enumerate(identities)}
    shards = shard_writer.plan_shards(specs, clips_per_shard, cfg)
    log(
        f"{name}: {len(specs)} clips, {len(identities)} identities, {len(shards)} shards -> {out_dir}"
        f" ({parse_report.summary()} while parsing)"
    )
    state = {"done": 0}

    def shard_done(shard: shard_writer.Shard, marker: dict) -> None:
        state["done"] += 1
        logging.info(
            "[%d] %s shard %d/%d: %d clips written, %d rejected (%.1fs)",
            state["done"], shard.split, shard.index + 1, shard.count, len(marker["records"]),
            sum(marker["rejected"].values()), time.time() - t0,
        )  # fmt: skip

    todo_clips = sum(len(s.specs) for s in shard_writer.pending(shards, out_dir))
    with progress.bar(todo_clips, name, unit="clip") as bar:
        written, skipped = shard_writer.write_shards(
            shards,
            out_dir,
            cfg,
            identity_index,
            num_workers=num_workers,
            process_fn=process_fn,
            progress=shard_done,
            on_clips=bar.update,
        )
    if skipped:
        log(f"  {skipped} shards were already finished (resumed run)")
    config = {k: v for k, v in dataclasses.asdict(cfg).items()}
    result = info_lib.build_info(
        out_dir,
        name=name,
        config=config,
        identities=identities,
        parse_skips=dict(parse_report.counts),
    )
    log(
        f"{name}: {result['num_clips']} clips, {result['hours']:.3f} h in "
        + ", ".join(f"{k}={v['num_clips']}" for k, v in result["splits"].items())
        + f"; rejected {result['rejected'] or 'none'}; parse skipped {result['parse_skipped'] or 'none'}"
        + f" ({time.time() - t0:.1f}s)"
    )
    if "companions" in result:
        log(
            f"  companion streams (clips): {result['companions']}; "
            f"not usable while processing: {result['companion_notes'] or 'none'}"
        )
    return result
