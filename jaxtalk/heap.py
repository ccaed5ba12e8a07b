"""glibc heap thresholds for a process that frees and reallocates the same large buffers
over and over, such as a grain worker (a batch of decoded frames, each batch).

glibc serves an allocation above its mmap threshold with a fresh mmap and returns the pages
on free, and it trims the heap top past its trim threshold; both start at 128 KB and adapt
only upwards to the largest block freed. A batch's buffers were then handed back
to the kernel and faulted in, zeroed, again the next time: measured on the 2-core CPU, 44% of
a loader worker's CPU time was in the kernel (8% in-process). (The training process gains
little: the tiny AniTalker stage-1 run went from 1.60-1.64 to 1.63-1.67 steps/s with these
thresholds, separate processes alternating over two rounds; it is left at glibc's defaults.)
"""

from __future__ import annotations

import ctypes

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_MAX = 32 << 20  # glibc's largest mmap threshold on 64-bit


def keep_freed_pages(trim_threshold: int) -> bool:
    """Blocks up to 32 MB come from the heap and freed heap pages stay with this process
    until `trim_threshold` bytes of them sit at the top. False where the C library is not
    glibc (nothing changed)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_MAX)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )
