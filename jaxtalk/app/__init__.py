"""`jaxtalk app`: the web page (Gradio) over the animators.

`options.py` the table of animator options the page offers, `session.py` what a submission
does (no web: tested without a browser), `ui.py` the thin Gradio layer. Needs the `app`
extra (gradio); nothing else in jaxtalk imports this package.
"""
