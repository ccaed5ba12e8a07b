"""The smallest model family, built from new files only (issue: one house for all families).

It is what a new family writes, in the order CONTRIBUTING.md gives: a Flax model
(`model.py`), a converter of its "released" PyTorch checkpoint that declares the release
(`convert.py`), a training task (`task.py`) with its config (`config.py`) and an animator
that declares the kinds it drives (`inference.py`). jaxtalk finds it through
$JAXTALK_PLUGINS=tests.toy_family and `config.task = "tests.toy_family.task"`; no shared
module names it. tests/test_toy_family.py trains, imports, exports and animates with it.
"""
