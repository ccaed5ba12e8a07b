"""jaxtalk.heap: after keep_freed_pages, blocks of a few MB come from the heap (no mmap per
allocation) and freeing them leaves the pages with the process. Run in a child process so
that the test worker's own heap keeps glibc's defaults."""

import subprocess
import sys

import pytest

CHILD = r"""
import ctypes
from jaxtalk import heap

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]

def mapped_and_arena(size):
    p = libc.malloc(size)
    during = libc.mallinfo2()
    libc.free(p)
    after = libc.mallinfo2()
    return during.hblkhd, after.arena

print(mapped_and_arena(8 << 20)[0] >= 8 << 20)  # glibc's default: its own mmap
assert heap.keep_freed_pages(256 << 20)
mapped, _ = mapped_and_arena(8 << 20)
_, arena = mapped_and_arena(8 << 20)
print(mapped < 8 << 20, arena >= 8 << 20)  # from the heap, and the heap kept its pages
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
def test_blocks_of_megabytes_come_from_the_heap_and_stay():
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["True", "True", "True"], out
