"""jaxtalk app: a web page to animate portraits (Gradio), served on this machine.

  jaxtalk app --weights=weights/anitalker_stage1.safetensors
  jaxtalk app --workdir=demo_out/stage1 --stage2=demo_out/stage2     # `make demo`'s runs

then open http://127.0.0.1:7860: upload a portrait and a driving video (or speech for a
speech-driven model), pick the model and its options (motion mode, face crop, seed,
sampling steps, head pose, ...), press Animate, watch the progress and download the mp4.
Every model given is offered: --weights (weights files of any family, or runs), --workdir
(training runs) and --stage2 (a speech-driven AniTalker stage 2: a file with --stage1, or
a run, which carries its stage 1). The options shown are those the chosen model takes
(jaxtalk/app/options.py). Needs the `app` extra: pip install 'jaxtalk[app]'.

--host=0.0.0.0 serves other machines too (there is no login: only on a trusted network).
Videos are written under --out_dir (default: a new temporary folder).
"""

from absl import flags

from jaxtalk import optional
from jaxtalk.errors import InputError

_WEIGHTS = flags.DEFINE_list("weights", [], "weights files (or runs) to offer, comma-separated")
_WORKDIR = flags.DEFINE_list("workdir", [], "training run directories to offer")
_STEP = flags.DEFINE_integer("step", None, "--workdir: checkpoint step (default latest)")
_STAGE2 = flags.DEFINE_string(
    "stage2", None, "a speech-driven model: anitalker_stage2 weights or an anitalker_stage2 run"
)
_STAGE1 = flags.DEFINE_string(
    "stage1", None, "--stage2 weights file: the anitalker_stage1 weights or run that renders"
)
_HUBERT = flags.DEFINE_string(
    "hubert", None, "HuBERT weights for hubert_* models (default: the imported `hubert` release)"
)
_CHUNK = flags.DEFINE_integer("chunk", 8, "frames rendered per device call")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "address to serve on (0.0.0.0: every interface)")
_PORT = flags.DEFINE_integer("port", 7860, "port to serve on")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "where the videos go (default: a temporary folder)")


def main(argv):
    if len(argv) > 1:
        raise InputError(f"unexpected arguments {argv[1:]}")
    optional.require("gradio", "app", "jaxtalk app")
    from jaxtalk.app import session, ui

    models = session.open_models(
        _WEIGHTS.value,
        _WORKDIR.value,
        stage2=_STAGE2.value,
        stage1=_STAGE1.value,
        hubert=_HUBERT.value,
        step=_STEP.value,
        chunk=_CHUNK.value,
    )
    studio = session.Studio(models, _OUT_DIR.value)
    print(f"models: {', '.join(studio.models)}; videos go to {studio.out_dir}", flush=True)
    ui.build(studio).queue().launch(
        server_name=_HOST.value,
        server_port=_PORT.value,
        allowed_paths=[studio.out_dir],
        ssr_mode=False,
        footer_links=[],
        theme=ui.theme(),
    )
