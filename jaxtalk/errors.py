"""Errors about what a user gave jaxtalk: a file, a flag, a value.

Every command turns an `InputError` into one line on stderr, `jaxtalk <command>: error:
<message>`, and exit status 2 (`jaxtalk/cli.py`), so messages name the file or flag and the
reason on a single line. Subclasses say which kind of input was at fault.
"""


def one_line(text: object, limit: int = 200) -> str:
    """`text` on a single line, cut to `limit` characters (for error messages)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class InputError(ValueError):
    """Something a user gave that jaxtalk cannot use; the message names it and says why."""


class CheckpointError(InputError):
    """A checkpoint, pickle, zip, safetensors or weights-metadata file that cannot be read
    safely; the message names the file and what is wrong with it."""
