"""The page: Gradio widgets over a `Studio` (jaxtalk/app/session.py), nothing more.

One column of inputs (model, portrait, the driver the model takes, crop and the model's
option rows), one of outputs (the video, its download, a status line). Changing the model
shows its driver's upload and its own option rows. An InputError becomes a `gr.Error`
message on the page; progress comes from the animator's per-chunk callback.
"""

from __future__ import annotations

from jaxtalk.app import options as options_lib
from jaxtalk.app.session import Studio
from jaxtalk.errors import InputError
from jaxtalk.inference import Driver

TITLE = "jaxtalk: animate a portrait"
INTRO = (
    "Upload a portrait and a driving video (or speech, for speech-driven models), pick the "
    "options and press **Animate**; the mp4 appears on the right, ready to download."
)
# System fonts only: the page loads nothing from outside the server (offline machines).
FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
HEIGHT = 260  # pixels of each image / video panel


def theme():
    """The default look with system fonts (Gradio's default fetches Google fonts)."""
    import gradio as gr

    return gr.themes.Default(font=FONTS, font_mono=["ui-monospace", "monospace"])


def _widgets(gr, row: options_lib.Option) -> list:
    """The Gradio components of one option row (its `width` of them)."""
    info = row.info or None
    if row.widget == "pose":
        values = row.initial()
        box = gr.Checkbox(value=values[0], label=row.label, info=info)
        return [box] + [
            gr.Slider(-1.0, 1.0, value=v, step=0.05, label=part)
            for part, v in zip(options_lib.POSE_PARTS, values[1:])
        ]
    value = row.initial()[0]
    if row.widget == "choice":
        return [gr.Dropdown(list(row.choices), value=value, label=row.label, info=info)]
    if row.widget == "check":
        return [gr.Checkbox(value=bool(value), label=row.label, info=info)]
    if row.widget == "auto":
        return [gr.Radio(list(options_lib.AUTO), value=value, label=row.label, info=info)]
    if row.widget == "slider":
        return [
            gr.Slider(
                row.minimum, row.maximum, value=value, step=row.step, label=row.label, info=info
            )
        ]
    if row.widget == "number":  # a text box: gr.Number cannot be left empty
        return [
            gr.Textbox(value=value, label=row.label, info=info, placeholder="the model's default")
        ]
    return [
        gr.Number(
            value=value,
            label=row.label,
            info=info,
            precision=0,
            minimum=row.minimum,
            maximum=row.maximum,
        )
    ]


def build(studio: Studio):
    """The Gradio Blocks of `studio`'s page (call `.launch()` on it)."""
    import gradio as gr

    labels = list(studio.models)
    first = studio.model(labels[0])
    with gr.Blocks(title=TITLE, analytics_enabled=False) as page:
        gr.Markdown(f"## {TITLE}\n{INTRO}")
        with gr.Row(equal_height=False):
            with gr.Column():
                model = gr.Dropdown(labels, value=labels[0], label="Model", elem_id="model")
                source = gr.Image(
                    type="filepath",
                    label="Portrait",
                    sources=["upload"],
                    height=HEIGHT,
                    elem_id="source",
                )
                video_in = gr.Video(
                    label="Driving video",
                    sources=["upload"],
                    height=HEIGHT,
                    visible=first.driver is Driver.VIDEO,
                    elem_id="driving_video",
                )
                speech = gr.Audio(
                    type="filepath",
                    label="Speech",
                    sources=["upload"],
                    visible=first.driver is Driver.AUDIO,
                    elem_id="speech",
                )
            with gr.Column():
                with gr.Accordion("Options", open=True):
                    crop = gr.Checkbox(
                        value=True,
                        label="Crop the face",
                        info="off: the portrait is already a face crop (centre square)",
                        elem_id="crop_face",
                    )
                    seconds = gr.Number(value=0, label="Max seconds", info="0: the whole driver")
                    groups, widgets = [], []
                    shown = studio.visible(labels[0])
                    for row, visible in zip(studio.rows, shown):
                        with gr.Group(visible=visible) as group:
                            widgets += _widgets(gr, row)
                        groups.append(group)
                run = gr.Button("Animate", variant="primary", elem_id="animate")
            with gr.Column():
                result = gr.Video(
                    label="Result", interactive=False, height=HEIGHT, elem_id="result"
                )
                download = gr.File(label="Download mp4", interactive=False, elem_id="download")
                status = gr.Markdown(elem_id="status")

        def choose(label):
            chosen = studio.model(label)
            return [
                gr.update(visible=chosen.driver is Driver.VIDEO),
                gr.update(visible=chosen.driver is Driver.AUDIO),
            ] + [gr.update(visible=v) for v in studio.visible(label)]

        # Gradio hands a tracker to the keyword whose default is a gr.Progress().
        def animate(
            label, portrait, driving, wav, crop_face, max_seconds, *values, progress=gr.Progress()
        ):
            progress(0, desc="reading the inputs")

            def told(done: int, total: int) -> None:
                progress((done, total), desc="rendering", unit="frames")

            try:
                video_driven = studio.model(label).driver is Driver.VIDEO
                path, written = studio.animate(
                    label,
                    portrait,
                    driving if video_driven else wav,
                    values,
                    crop_face=crop_face,
                    max_seconds=max_seconds or None,
                    progress=told,
                )
            except InputError as e:
                raise gr.Error(str(e)) from None
            length = written.frames / written.fps
            return path, path, f"{written.frames} frames at {written.fps:g} fps ({length:.1f} s)"

        model.change(choose, model, [video_in, speech] + groups)
        run.click(
            animate,
            [model, source, video_in, speech, crop, seconds] + widgets,
            [result, download, status],
        )
    return page


__all__ = ["build", "theme"]
