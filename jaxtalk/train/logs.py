"""Console lines, a progress bar, TensorBoard summaries, FLOPs and MFU.

Only process 0 writes; every process computes the same numbers. Device arrays are fetched
at the log interval only, so logging adds no per-step host synchronisation.
"""

from __future__ import annotations

import datetime
import io
import json
import time

import jax
import numpy as np

from jaxtalk import fs, progress

# Dense bf16 peak FLOP/s per device (vendor figures; TPU figures are per chip).
PEAK_FLOPS = {
    "tpu v4": 275e12,
    "tpu v5 lite": 197e12,  # v5e
    "tpu v5e": 197e12,
    "tpu v5": 459e12,  # v5p reports "TPU v5"
    "tpu v5p": 459e12,
    "tpu v6 lite": 918e12,  # v6e (Trillium)
    "tpu v6e": 918e12,
    "a100": 312e12,
    "h100": 989e12,
    "h200": 989e12,
}


def peak_flops(device) -> float | None:
    """Peak for this device kind, or None (CPU and unknown devices: MFU is n/a)."""
    kind = device.device_kind.lower()
    for name in sorted(PEAK_FLOPS, key=len, reverse=True):
        if name in kind:
            return PEAK_FLOPS[name]
    return None


def compiled_flops(compiled) -> float | None:
    """Model FLOPs of one call from XLA's cost analysis (summed over devices)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def mfu(flops_per_step: float | None, steps_per_second: float, devices) -> float | None:
    peak = peak_flops(devices[0])
    if not flops_per_step or peak is None:
        return None
    return flops_per_step * steps_per_second / (peak * len(devices))


def _format_duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


class MetricWriter:
    def __init__(
        self,
        workdir: str,
        config,
        total_steps: int,
        start_step: int,
        examples_per_step: int,
        is_main: bool,
        devices,
    ):
        self.is_main, self.devices = is_main, list(devices)  # the run's, for its MFU
        self.total_steps, self.examples_per_step = total_steps, examples_per_step
        self._last_step, self._last_time = start_step, time.perf_counter()
        self._bar = self._tb = self._jsonl = None
        self.flops_per_step: float | None = None
        if not is_main:
            return
        # On an object store, appended lines are uploaded every 30 s and at close.
        self._jsonl = fs.AppendFile(fs.join(workdir, "metrics.jsonl"), flush_seconds=30)
        if config.log.tensorboard:
            from tensorboardX import SummaryWriter

            _tensorboard_through_fs(workdir)
            self._tb = SummaryWriter(fs.join(workdir, "tensorboard"))
        if config.log.progress_bar:  # drawn on a terminal only, unless --noprogress
            self._bar = progress.bar(
                total_steps, "train", unit="step", initial=start_step, leave=False
            )

    def print(self, line: str) -> None:
        if not self.is_main:
            return
        if self._bar is not None:
            self._bar.write(line)
        else:
            print(line, flush=True)

    def advance(self, step: int) -> None:
        if self._bar is not None:
            self._bar.update(step - self._bar.n)

    def train_line(self, step: int, metrics: dict, wait_seconds: list[float]) -> dict:
        """Logs the interval ending at `step`; returns the scalars it wrote."""
        now = time.perf_counter()
        steps = max(step - self._last_step, 1)
        rate = steps / max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        scalars = {k: float(v) for k, v in metrics.items()}
        scalars["perf/steps_per_sec"] = rate
        scalars["perf/examples_per_sec"] = rate * self.examples_per_step
        scalars["perf/data_wait_ms"] = 1e3 * float(np.mean(wait_seconds)) if wait_seconds else 0.0
        util = mfu(self.flops_per_step, rate, self.devices)
        if util is not None:
            scalars["perf/mfu"] = util
        eta = (self.total_steps - step) / rate
        losses = "  ".join(f"{k} {v:.4g}" for k, v in scalars.items() if not k.startswith("perf/"))
        self.print(
            f"step {step}/{self.total_steps}  {losses}  | {rate:.2f} steps/s  "
            f"{scalars['perf/examples_per_sec']:.1f} ex/s  data wait "
            f"{scalars['perf/data_wait_ms']:.2f} ms/step  MFU "
            f"{'n/a' if util is None else f'{100 * util:.1f}%'}  ETA {_format_duration(eta)}"
        )
        self.scalars(step, scalars)
        return scalars

    def scalars(self, step: int, scalars: dict) -> None:
        """TensorBoard and one JSON line per call in <workdir>/metrics.jsonl."""
        if self._jsonl is not None:
            self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
            self._jsonl.flush()
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)

    def media(self, step: int, media: dict) -> None:
        """Images (N,H,W,3) and videos (N,T,H,W,3) in [0, 1]."""
        if self._tb is None:
            return
        for name, value in media.items():
            value = np.clip(np.asarray(jax.device_get(value), np.float32), 0, 1)
            if value.ndim == 4:
                self._tb.add_images(name, value, step, dataformats="NHWC")
            elif value.ndim == 5:
                self._tb.file_writer.add_summary(_gif_summary(name, value), step)
            else:
                raise ValueError(
                    f"sample {name!r} has shape {value.shape}: expected "
                    "(N,H,W,3) images or (N,T,H,W,3) videos"
                )

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()


class _EventFiles:
    """tensorboardX writer factory: event files through jaxtalk.fs (tensorboardX's own gs://
    writer would use a separate client with its own credential discovery)."""

    def open(self, path):
        return fs.AppendFile(path, binary=True, flush_seconds=30)

    def directory_check(self, path):
        pass  # object stores need no directories


def _tensorboard_through_fs(workdir: str) -> None:
    if fs.is_remote(workdir):
        from tensorboardX import record_writer

        record_writer.register_writer_factory(fs.scheme(workdir), _EventFiles())


def _gif_summary(name: str, videos: np.ndarray):
    """An animated GIF image summary (what TensorBoard plays as a video): clips side by side."""
    from PIL import Image
    from tensorboardX.proto.summary_pb2 import Summary

    frames = np.concatenate(list(videos), axis=2)  # (T, H, N*W, 3)
    frames = (frames * 255).round().astype(np.uint8)
    pil = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    pil[0].save(buf, format="GIF", save_all=True, append_images=pil[1:], duration=40, loop=0)
    t, h, w, c = frames.shape
    image = Summary.Image(height=h, width=w, colorspace=c, encoded_image_string=buf.getvalue())
    return Summary(value=[Summary.Value(tag=name, image=image)])
