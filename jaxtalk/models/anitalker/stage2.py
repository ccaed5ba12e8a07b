"""AniTalker stage 2: the speech-to-motion diffusion denoiser (the release's DiffusionPredictor).

Given speech features, the source portrait's start code (512-d) and its motion code
(20-d "direction_start"), a noisy motion sequence x_t (B, T, 20) at 25 fps and the diffusion
timestep t, it predicts the noise eps. Structure (X-LANCE/AniTalker code/model/seq2seq.py):

  audio  hubert: softmax(weights[25])-mix of all HuBERT hidden states (B, T50, 25, 1024)
                 -> Conv1d(1024, 512, k3 s2 p1) to 25 Hz -> Conformer(512, 4 blocks)
         mfcc:   (B, T100, 39) -> Conv1d(39, 256, k3 s2 p1) -> Conv1d(256, 512, k3 s2 p1)
  variance adapter (all but hubert_audio_only), in the release order location, scale, pose:
         x += encoder(control if given else predictor(x)), predictor/encoder = LSTM + Linear
  fusion concat(x, Linear(direction_start), Linear(start), Linear(x_t), Linear(t)) -> 1024
  decoder Conformer(1024, 2 blocks) -> Linear(1024, 20)

The five released variants are `infer_type`s. Sampling evaluates the audio branch once:
`condition(...)` (audio encoder + variance adapter, independent of x_t and t), then
`denoise(cond, ...)` per diffusion step; `__call__` chains both for training.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.models.anitalker.stage1 import AniTalkerMotion
from jaxtalk.models.audio import hubert as hubert_lib
from jaxtalk.models.layers.conformer import ConformerEncoder
from jaxtalk.models.layers.lstm import LSTM
from jaxtalk.models.layers.torch_nn import conv1d, dense

Dtype = Any

INFER_TYPES = (
    "mfcc_pose_only",
    "mfcc_full_control",
    "hubert_audio_only",
    "hubert_pose_only",
    "hubert_full_control",
)
# Released trainable parameter counts (reference/keys/anitalker_stage2_state_dict.txt).
RELEASED_PARAM_COUNTS = {
    "hubert_audio_only": 39_573_677,
    "hubert_pose_only": 40_301_104,
    "hubert_full_control": 41_753_394,
    "mfcc_pose_only": 26_488_855,
    "mfcc_full_control": 27_941_145,
}
# Variance-adapter attributes in the order the release applies them: name -> (dims, prefix
# of the release's predictor/encoder modules).
ATTRIBUTES = {"location": (1, "location"), "scale": (1, "face_scale"), "pose": (3, "pose")}


def attributes_for(infer_type: str) -> tuple[str, ...]:
    """The variance-adapter attributes a variant predicts (and accepts as controls)."""
    if infer_type not in INFER_TYPES:
        raise ValueError(f"unknown infer_type {infer_type!r}; choose one of {INFER_TYPES}")
    if infer_type.endswith("full_control"):
        return ("location", "scale", "pose")
    if infer_type.endswith("pose_only"):
        return ("pose",)
    return ()


class LSTMRegressor(nn.Module):
    """The release's `LSTM` block: 2-layer LSTM(hidden 128) then Linear(128, output_dim)."""

    output_dim: int
    hidden_size: int = 128
    num_layers: int = 2
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        y = LSTM(self.hidden_size, self.num_layers, name="lstm", **kw)(x)
        return dense(self.output_dim, ("mlp", "embed"), "fc", **kw)(y)


class VarianceAdapter(nn.Module):
    """FastSpeech-2-style adapter: per attribute x += encoder(control or predictor(x)).

    Returns (x, predictions) where predictions maps each attribute to what the predictor
    produced (or the control that replaced it), shapes (B, T, dims).
    """

    attributes: tuple[str, ...]
    features: int
    hidden_size: int = 128
    num_layers: int = 2
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, controls: Mapping[str, Any] | None = None):
        controls = controls or {}
        kw = dict(
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        predictions = {}
        for attr in self.attributes:
            dims, prefix = ATTRIBUTES[attr]
            value = controls.get(attr)
            if value is None:
                value = LSTMRegressor(dims, name=f"{prefix}_predictor", **kw)(x)
            else:
                # in the compute dtype before anything else (float64 stays float64)
                value = jnp.asarray(value).astype(self.dtype)
                value = _as_sequence_of(value, x.shape[:2], dims, attr)
                # Keep the predictor's params in the tree even when it is overridden.
                if self.is_initializing():
                    LSTMRegressor(dims, name=f"{prefix}_predictor", **kw)(x)
            x = x + LSTMRegressor(self.features, name=f"{prefix}_encoder", **kw)(value)
            predictions[attr] = value
        return x, predictions


def _as_sequence_of(value, batch_time: tuple[int, int], dims: int, what: str):
    """Broadcasts a control to (B, T, dims) from (B, T, dims), (B, T) when dims == 1,
    a per-clip (B, dims) or a constant (dims,) / scalar."""
    value = jnp.asarray(value)
    b, t = batch_time
    if dims == 1 and value.shape == (b, t):
        value = value[..., None]
    elif value.shape == (b, dims):
        value = value[:, None]
    if value.ndim <= 1 or value.shape[:1] == (b,):
        try:
            value = jnp.broadcast_to(value, (b, t, dims))
        except ValueError:
            pass
    if value.shape != (b, t, dims):
        raise ValueError(f"control {what!r} has shape {value.shape}; expected ({b}, {t}, {dims})")
    return value


class HubertLayerMix(nn.Module):
    """softmax(weights)-weighted sum over the layer axis: (B, T, L, C) -> (B, T, C)."""

    num_layers: int = 25
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, states):
        if states.shape[-2] != self.num_layers:
            raise ValueError(
                f"expected {self.num_layers} stacked HuBERT states on axis -2 "
                f"(B, T, layers, C), got {states.shape}"
            )
        weights = self.param(
            "weights",
            nn.with_logical_partitioning(nn.initializers.zeros_init(), (None,)),
            (self.num_layers,),
            self.param_dtype,
        )
        mix = jax.nn.softmax(weights.astype(jnp.promote_types(self.dtype, jnp.float32)))
        mix = mix.astype(self.dtype)
        return jnp.einsum("btlc,l->btc", states.astype(self.dtype), mix)


class DiffusionPredictor(nn.Module):
    """AniTalker's stage-2 denoiser; `infer_type` selects one of the five released variants.

    Inputs (channels-last, T = number of 25 fps motion frames):
      motion_start      (B, motion_start_dim)  start code of the source image (LIA h_source)
      direction_start   (B, motion_dim)        motion code of the source image
      audio             hubert: (B, 2T, hubert_layers, hubert_dim) stacked hidden states;
                        mfcc:   (B, 4T, mfcc_dim) MFCC + deltas at 100 Hz
      noisy_x           (B, T, motion_dim)     x_t
      t                 (B,)                   diffusion timestep of the 1000-step process
                                               (the raw value is fed to Linear(1, 128))
      location/scale/pose  optional controls; given -> used instead of the prediction
    """

    infer_type: str = "hubert_full_control"
    motion_dim: int = 20
    motion_start_dim: int = 512
    speech_dim: int = 512
    fusion_dim: int = 128
    speech_layers: int = 4
    decoder_layers: int = 2
    hubert_dim: int = 1024
    hubert_layers: int = 25
    mfcc_dim: int = 39
    mfcc_hidden: int = 256
    num_heads: int = 2
    kernel_size: int = 13
    dropout_rate: float = 0.2
    lstm_hidden: int = 128
    lstm_layers: int = 2
    # The release feeds the raw timestep (0..999) to Linear(1, 128) (t_scale 1). At init that
    # feature is ~1000x the others and swamps x_t after the post-LN, which takes many steps
    # to unlearn; small from-scratch runs use t_scale 1e-3.
    t_scale: float = 1.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def audio_kind(self) -> str:
        return self.infer_type.split("_")[0]

    @property
    def attributes(self) -> tuple[str, ...]:
        return attributes_for(self.infer_type)

    @property
    def decoder_dim(self) -> int:
        return self.speech_dim + 4 * self.fusion_dim

    def setup(self):
        attributes_for(self.infer_type)  # validates the name
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        conformer = dict(
            num_heads=self.num_heads,
            kernel_size=self.kernel_size,
            dropout_rate=self.dropout_rate,
            positional_dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.dropout_rate,
            **kw,
        )
        if self.audio_kind == "hubert":
            self.layer_mix = HubertLayerMix(self.hubert_layers, **kw)
            self.down_sample1 = conv1d(
                self.speech_dim, 3, "down_sample1", stride=2, padding=1, **kw
            )
            self.speech_encoder = ConformerEncoder(
                self.speech_dim, num_blocks=self.speech_layers, **conformer
            )
        else:
            self.down_sample1 = conv1d(
                self.mfcc_hidden, 3, "down_sample1", stride=2, padding=1, **kw
            )
            self.down_sample2 = conv1d(
                self.speech_dim, 3, "down_sample2", stride=2, padding=1, **kw
            )
        if self.attributes:
            self.variance_adapter = VarianceAdapter(
                self.attributes, self.speech_dim, self.lstm_hidden, self.lstm_layers, **kw
            )
        self.init_code_proj = dense(self.fusion_dim, ("embed", "mlp"), "init_code_proj", **kw)
        self.noisy_encoder = dense(self.fusion_dim, ("embed", "mlp"), "noisy_encoder", **kw)
        self.t_encoder = dense(self.fusion_dim, ("embed", "mlp"), "t_encoder", **kw)
        self.encoder_direction_code = dense(
            self.fusion_dim, ("embed", "mlp"), "encoder_direction_code", **kw
        )
        self.coarse_decoder = ConformerEncoder(
            self.decoder_dim, num_blocks=self.decoder_layers, **conformer
        )
        self.out_proj = dense(self.motion_dim, ("mlp", "embed"), "out_proj", **kw)

    def encode_audio(self, audio, train: bool = False):
        """Speech features -> (B, T, speech_dim) at 25 Hz."""
        if self.audio_kind == "hubert":
            x = self.down_sample1(self.layer_mix(audio))
            return self.speech_encoder(x, train=train)
        if audio.ndim != 3 or audio.shape[-1] != self.mfcc_dim:
            raise ValueError(f"mfcc input must be (B, T100, {self.mfcc_dim}), got {audio.shape}")
        return self.down_sample2(self.down_sample1(audio.astype(self.dtype)))

    def condition(self, audio, location=None, scale=None, pose=None, train: bool = False):
        """Audio branch and variance adapter: (cond (B, T, speech_dim), predictions dict).

        Does not depend on x_t or t, so a sampler computes it once per clip.
        """
        x = self.encode_audio(audio, train=train)
        if not self.attributes:
            return x, {}
        controls = {"location": location, "scale": scale, "pose": pose}
        return self.variance_adapter(x, controls)

    def denoise(self, cond, motion_start, direction_start, noisy_x, t, train: bool = False):
        """Fusion + Conformer decoder + output projection: eps prediction (B, T, motion_dim)."""
        b, frames = noisy_x.shape[:2]
        if cond.shape[1] != frames:
            raise ValueError(
                f"audio gives {cond.shape[1]} frames at 25 Hz but x_t has {frames}; "
                "hubert input needs 2T steps at 50 Hz, mfcc 4T at 100 Hz"
            )

        def per_frame(y):  # (B, F) -> (B, T, F)
            return jnp.broadcast_to(y[:, None], (b, frames, y.shape[-1]))

        t = jnp.broadcast_to(jnp.asarray(t, self.dtype).reshape(-1), (b,)) * self.t_scale
        fused = jnp.concatenate(
            [
                cond.astype(self.dtype),
                per_frame(self.encoder_direction_code(direction_start.astype(self.dtype))),
                per_frame(self.init_code_proj(motion_start.astype(self.dtype))),
                self.noisy_encoder(noisy_x.astype(self.dtype)),
                per_frame(self.t_encoder(t[:, None])),
            ],
            axis=-1,
        )
        return self.out_proj(self.coarse_decoder(fused, train=train))

    def __call__(
        self,
        motion_start,
        direction_start,
        audio,
        noisy_x,
        t,
        location=None,
        scale=None,
        pose=None,
        train: bool = False,
    ):
        """Training forward: (eps prediction (B, T, motion_dim), attribute predictions).

        For the attribute loss leave the controls None (the release trains with
        control_flag=False) and compare the predictions with the labels.
        """
        cond, predictions = self.condition(audio, location, scale, pose, train=train)
        eps = self.denoise(cond, motion_start, direction_start, noisy_x, t, train=train)
        return eps, predictions


def init_inputs(model: DiffusionPredictor, batch: int = 1, frames: int = 8):
    """Zero inputs with the right shapes, for `model.init` and `jax.eval_shape`."""
    if model.audio_kind == "hubert":
        audio = jnp.zeros((batch, 2 * frames, model.hubert_layers, model.hubert_dim))
    else:
        audio = jnp.zeros((batch, 4 * frames, model.mfcc_dim))
    return (
        jnp.zeros((batch, model.motion_start_dim)),
        jnp.zeros((batch, model.motion_dim)),
        audio,
        jnp.zeros((batch, frames, model.motion_dim)),
        jnp.zeros((batch,)),
    )


# ---------------------------------------------------------------------------- from configs
# Shared by the training recipe (jaxtalk/tasks/anitalker_stage2.py) and the animator
# (jaxtalk/inference/audio_driven.py).
SAMPLES_PER_FRAME = 640  # 16 kHz audio at 25 fps
MODEL_KEYS = (
    "infer_type",
    "speech_dim",
    "fusion_dim",
    "speech_layers",
    "decoder_layers",
    "mfcc_hidden",
    "num_heads",
    "kernel_size",
    "dropout_rate",
    "lstm_hidden",
    "lstm_layers",
    "t_scale",
)
STAGE1_KEYS = ("size", "width", "style_dim", "motion_dim")


def predictor_from_config(model_cfg, stage1_cfg=None, dtype=jnp.float32) -> DiffusionPredictor:
    kwargs = {k: model_cfg[k] for k in MODEL_KEYS if k in model_cfg}
    if stage1_cfg is not None:
        kwargs.update(motion_dim=stage1_cfg["motion_dim"], motion_start_dim=stage1_cfg["style_dim"])
    return DiffusionPredictor(dtype=dtype, **kwargs)


def stage1_from_config(stage1_cfg, dtype=jnp.float32) -> AniTalkerMotion:
    return AniTalkerMotion(dtype=dtype, **{k: stage1_cfg[k] for k in STAGE1_KEYS})


def hubert_config(size: str):
    sizes = {"large": hubert_lib.HUBERT_LARGE, "base": hubert_lib.HUBERT_BASE}
    if size not in sizes:
        raise ValueError(f"unknown hubert size {size!r}: {sorted(sizes)}")
    return sizes[size]


# ---------------------------------------------------------------------------- motion codes
def to_diffusion(codes, stats, motion_scale: float):
    """Stage-1 motion codes -> the diffusion model's x0 (stats None: the release's scaling)."""
    if stats is not None:
        codes = (codes - stats["mean"]) / stats["std"]
    return codes / motion_scale


def from_diffusion(x0, stats, motion_scale: float):
    """Inverse of to_diffusion."""
    codes = x0 * motion_scale
    if stats is not None:
        codes = codes * stats["std"] + stats["mean"]
    return codes


def hubert_states(hubert, variables, wav):
    """(B, S) 16 kHz audio -> AniTalker's (B, 2 * S // 640, layers, C) stacked HuBERT states,
    with the per-utterance waveform normalisation done in JAX."""
    wav = wav.astype(jnp.promote_types(wav.dtype, jnp.float32))  # float64 audio stays float64
    wav = (wav - wav.mean(-1, keepdims=True)) / jnp.sqrt(wav.var(-1, keepdims=True) + 1e-7)
    return hubert_lib.stack_for_anitalker(hubert.apply(variables, wav))
