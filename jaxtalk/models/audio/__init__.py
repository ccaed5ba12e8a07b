"""Audio feature models shared across families: `hubert` (HuBERT large/base, every hidden
state; mapping in jaxtalk/convert/hubert.py) and `mfcc` (the numpy 39-d MFCC front end)."""
