"""LivePortrait family (KwaiVGI/LivePortrait): appearance feature extractor F
(`appearance`), warping module W with its dense motion network (`warping`) and the conv
blocks they share (`blocks`). Checkpoint mapping: jaxtalk/convert/liveportrait.py."""
