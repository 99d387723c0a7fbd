"""Faster CPU training in one call: keep_freed_memory() makes glibc keep freed memory, in 2 MB pages.

A CPU training step of the Net runs markedly faster with it (measured on Intel Xeon and AMD EPYC hosts:
docs/speed.md). It changes the C allocator of the whole process, so train() and test() never call it: the
notebook and train.py do, in one visible line.
"""

import ctypes
import functools
import platform


@functools.cache
def keep_freed_memory():
    """Make glibc keep freed memory for reuse instead of returning it to the OS, in 2 MB pages.

    By default glibc serves each large tensor (the activations here are tens of MB) with a fresh mmap and
    unmaps it when freed, so every training step faults all of its memory in again, page by page; with
    this, a CPU training step of the Net runs faster (docs/speed.md). The process then keeps its peak memory.
    It also has the kernel back the heap with 2 MB pages instead of 4 KB ones (transparent huge pages,
    where the kernel offers them), the part grown before this call included: fewer TLB misses.
    Does nothing where the C library is not glibc. Runs once per process; later calls return the first
    call's result.
    """
    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4  # mallopt parameters, from glibc's malloc.h
        # mmap nothing, so that all tensors come from the heap; never give the heap's top back (-1).
        if not (libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, -1)):
            return False
    except (OSError, AttributeError):
        return False
    _back_heap_with_huge_pages(libc)
    return True


def _back_heap_with_huge_pages(libc, size=2**31):
    """Back glibc's heap with 2 MB pages: hand its free pages back to the kernel (code run before, such
    as the original S5 pipeline, may have grown it in 4 KB pages), grow it by `size` bytes of address
    space, mark all of it MADV_HUGEPAGE and free the new part. Later allocations are carved from it,
    and only the pages they touch take memory."""
    madv_hugepage, huge = 14, 2**21  # from linux/mman.h; the huge page size of x86-64
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.malloc_trim(0)
    block = libc.malloc(size)
    if not block:
        return
    start = min(_heap_start(), block)
    start, end = -(-start // huge) * huge, (block + size) // huge * huge
    libc.madvise(start, end - start, madv_hugepage)  # fails harmlessly where THP is compiled out
    libc.free(block)


def _heap_start():
    """Where the process's heap (glibc's main arena) begins, from /proc/self/maps."""
    with open("/proc/self/maps") as maps:
        return min((int(line.split("-", 1)[0], 16) for line in maps if line.rstrip().endswith("[heap]")),
                   default=2**64)
