"""SyncNet LSE-D / LSE-C: MFCC, the offset search, the net and its importer."""

import jax
import numpy as np
import pytest
from scipy import fft

from jaxtalk.convert import mapping, torch_pickle
from jaxtalk.convert import syncnet as convert_syncnet
from jaxtalk.evaluate import sync
from jaxtalk.models.metric_nets.syncnet import SyncNet
from tests.evaluate import numpy_reference as ref
from tests.evaluate.torch_layout import random_state_dict

KNOWN = {
    "netcnnlip.0.weight": (96, 3, 5, 7, 7),
    "netcnnaud.18.weight": (512, 256, 5, 4),
    "netcnnaud.19.running_var": (512,),
    "netfclip.3.weight": (1024, 512),
    "netfcaud.1.num_batches_tracked": (),
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    rng = np.random.default_rng(0)
    sd = random_state_dict(convert_syncnet.rules(), convert_syncnet.variable_shapes(), rng)
    path = tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model"
    torch_pickle.save(sd, path)
    return sd, path


def test_importer_is_key_complete(checkpoint, tmp_path):
    sd, path = checkpoint
    assert len(sd) == 102
    for key, shape in KNOWN.items():
        assert sd[key].shape == shape, key
    variables = convert_syncnet.import_checkpoint(path)
    np.testing.assert_array_equal(
        variables["params"]["video"]["video_conv1"]["kernel"],
        sd["netcnnlip.0.weight"].transpose(2, 3, 4, 1, 0),
    )
    bad = dict(sd)
    bad["netcnnaud.4.weight"] = bad["netcnnaud.4.weight"][:, :32]
    torch_pickle.save(bad, tmp_path / "bad.model")
    with pytest.raises(mapping.ConversionError, match="netcnnaud.4.weight.*shape"):
        convert_syncnet.import_checkpoint(tmp_path / "bad.model")


def numpy_audio_stream(sd, x):
    def bn(h, p):
        shape = (1, -1) + (1,) * (h.ndim - 2)
        return (h - sd[p + ".running_mean"].reshape(shape)) / np.sqrt(
            sd[p + ".running_var"].reshape(shape) + 1e-5
        ) * sd[p + ".weight"].reshape(shape) + sd[p + ".bias"].reshape(shape)

    def block(h, i, padding):
        return ref.relu(
            bn(
                ref.conv2d(
                    h, sd[f"netcnnaud.{i}.weight"], sd[f"netcnnaud.{i}.bias"], padding=padding
                ),
                f"netcnnaud.{i + 1}",
            )
        )

    h = block(block(x, 0, 1), 4, 1)
    h = ref.max_pool2d(h, 3, (1, 2))
    h = block(block(block(h, 8, 1), 11, 1), 14, 1)
    h = ref.max_pool2d(h, 3, 2)
    h = block(h, 18, 0).reshape(len(x), -1)
    h = ref.relu(bn(h @ sd["netfcaud.0.weight"].T + sd["netfcaud.0.bias"], "netfcaud.1"))
    return h @ sd["netfcaud.3.weight"].T + sd["netfcaud.3.bias"]


def test_audio_stream_matches_numpy(checkpoint):
    sd, path = checkpoint
    variables = convert_syncnet.import_checkpoint(path)
    x = np.random.default_rng(1).standard_normal((2, 1, 13, 20)).astype(np.float32)
    got = jax.jit(lambda v, w: SyncNet().apply(v, w, method=SyncNet.embed_audio))(
        {k: variables[k] for k in ("params", "batch_stats")}, ref.nhwc(x)
    )
    want = numpy_audio_stream(sd, x.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_video_first_layer_matches_numpy(checkpoint):
    sd, path = checkpoint
    variables = convert_syncnet.import_checkpoint(path)
    clips = np.random.default_rng(2).uniform(0, 255, (1, 5, 224, 224, 3)).astype(np.float32)
    _, state = jax.jit(
        lambda v, c: SyncNet().apply(v, c, method=SyncNet.embed_video, capture_intermediates=True)
    )({k: variables[k] for k in ("params", "batch_stats")}, clips)
    conv1 = state["intermediates"]["video"]["video_conv1"]["__call__"][0]  # (1, 1, 109, 109, 96)
    # The top-left 6x6 outputs only see the top-left 17x17 pixels: a numpy 3-D conv there.
    patch = clips[0, :, :17, :17, :].transpose(3, 0, 1, 2).astype(np.float64)  # C, T, H, W
    weight = sd["netcnnlip.0.weight"]
    want = sum(ref.conv2d(patch[None, :, t], weight[:, :, t], stride=2) for t in range(5))
    want = want[0] + sd["netcnnlip.0.bias"].reshape(-1, 1, 1)
    np.testing.assert_allclose(conv1[0, 0, :6, :6], want.transpose(1, 2, 0), rtol=1e-4, atol=1e-3)


def test_sync_mfcc_definition():
    """The MFCCs the windows are cut from, on the int16 scale syncnet_python feeds them."""
    rng = np.random.default_rng(3)
    audio = np.clip(rng.standard_normal(16000 + 77) * 0.1, -1, 1)
    _, windows = sync.sync_windows(np.zeros((26, 4, 4, 3)), audio)
    got = windows[:, :, :4, 0].transpose(0, 2, 1).reshape(-1, 13)  # 4 MFCC steps per frame
    audio = audio * 32768
    # frame 5 from the definition, with scipy's DCT
    emphasized = np.append(audio[0], audio[1:] - 0.97 * audio[:-1])
    frame = emphasized[5 * 160 : 5 * 160 + 400]
    power = np.abs(np.fft.rfft(frame, 512)) ** 2 / 512
    mels = np.linspace(0, 2595 * np.log10(1 + 8000 / 700), 28)
    corners = np.floor(513 * 700 * (10 ** (mels / 2595) - 1) / 16000).astype(int)
    bank = np.zeros((26, 257))
    for j in range(26):
        lo, mid, hi = corners[j : j + 3]
        bank[j, lo:mid] = (np.arange(lo, mid) - lo) / (mid - lo)
        bank[j, mid:hi] = (hi - np.arange(mid, hi)) / (hi - mid)
    cep = fft.dct(np.log(bank @ power), type=2, norm="ortho")[:13]
    cep *= 1 + 11 * np.sin(np.pi * np.arange(13) / 22)
    cep[0] = np.log(power.sum())
    np.testing.assert_allclose(got[5], cep, rtol=1e-5)  # windows are float32


def loop_offset_search(video, audio, vshift):
    """syncnet_python's calc_pdist + evaluate, written as loops."""
    padded = np.concatenate(
        [np.zeros((vshift, audio.shape[1])), audio, np.zeros((vshift, audio.shape[1]))]
    )
    dists = np.array(
        [
            [np.linalg.norm(video[i] - padded[i + s] + 1e-6) for s in range(2 * vshift + 1)]
            for i in range(len(video))
        ]
    )
    mean = dists.mean(0)
    best = int(np.argmin(mean))
    return mean, mean[best], np.median(mean) - mean[best], vshift - best


def test_offset_search_matches_loops_and_finds_the_shift():
    rng = np.random.default_rng(4)
    audio = rng.standard_normal((40, 16))
    video = np.roll(audio, -3, axis=0) + 0.05 * rng.standard_normal((40, 16))  # video i ~ audio i+3
    result = sync.offset_search(video.astype(np.float32), audio.astype(np.float32), vshift=6)
    mean, lse_d, lse_c, offset = loop_offset_search(video, audio, 6)
    np.testing.assert_allclose(result["mean_distance_per_shift"], mean, rtol=1e-5)
    np.testing.assert_allclose([result["lse_d"], result["lse_c"]], [lse_d, lse_c], rtol=1e-5)
    assert int(result["offset"]) == offset == 6 - 9


def test_windows_and_errors():
    frames = np.zeros((12, 8, 8, 3), np.float32)
    frames[..., 0] = 1.0  # pure red in RGB
    clips, windows = sync.sync_windows(frames, np.zeros(12 * 640))
    assert clips.shape == (7, 5, 8, 8, 3) and windows.shape == (7, 13, 20, 1)
    assert clips[0, 0, 0, 0].tolist() == [0, 0, 255]  # BGR, 0..255 as cv2 gives
    with pytest.raises(ValueError, match="too short"):
        sync.sync_windows(frames[:5], np.zeros(5 * 640))
    with pytest.raises(ValueError, match="16000 Hz"):
        sync.sync_windows(frames, np.zeros(12 * 640), sample_rate=8000)
