"""How a large safetensors tensor's bytes reach memory (`alloy.io.sources.SafetensorsFile`):
mapped when they are in the page cache already, read with ``O_DIRECT`` when the inputs are
larger than the memory, else read through the cache by the caller.

On the bench's virtual machine every 4 KiB page that passes through the page cache costs 1-3
us of system time, and the first touch of a page the disk has just filled costs about 1 us
wherever it happens (bench/README.md, "Vectorized kernels and I/O past the page cache"). So a
cached tensor is mapped rather than copied (a warm 1.1B TIES merge, 14.5 s to 10.4 s), bytes on
the disk are read rather than mapped (a map put the first touches on the merge's threads: a
cold 7B TIES merge, 99-109 s against 88 s), and inputs that could not stay cached anyway skip
the cache (the same merge, 88 s to 56 s with the writes).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
from typing import Any

import numpy as np
import torch

MAP_MIN = 1 << 20  # smaller tensors are read: a map's system calls would cost more
MAP_CACHED = 0.9  # the share of a tensor's pages in the page cache for it to be mapped
DIRECT_ALIGN = 4096  # O_DIRECT: offsets, lengths and buffer addresses in whole blocks
_MADV_POPULATE_READ = 22  # Linux 5.14: map the cached pages now, on the reading thread


def _libc(name: str, third: Any) -> Any:
    """libc's ``madvise`` or ``mincore`` through ctypes, which lets go of the GIL during the
    call (the ``mmap`` module's ``madvise`` keeps it: the merge's other threads would wait)."""
    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, third]
    fn.restype = ctypes.c_int
    return fn


_POSIX = hasattr(mmap, "MAP_PRIVATE") and os.name == "posix"
_MADVISE: Any = _libc("madvise", ctypes.c_int) if _POSIX else None
_MINCORE: Any = _libc("mincore", ctypes.c_void_p) if _POSIX else None
CAN_MAP = _MADVISE is not None and _MINCORE is not None
CAN_READ_DIRECT = hasattr(os, "O_DIRECT")


def aligned_buffer(nbytes: int, align: int) -> torch.Tensor:
    """A fresh uint8 buffer whose address is a multiple of ``align``."""
    raw = torch.empty(nbytes + align, dtype=torch.uint8)
    pad = -raw.data_ptr() % align
    return raw[pad : pad + nbytes]


def map_cached(fd: int, offset: int, nbytes: int, itemsize: int) -> torch.Tensor | None:
    """The bytes ``[offset, offset + nbytes)`` of ``fd`` as a uint8 tensor over a private map
    of them (a write copies the page, never reaches the file; the map goes with the tensor),
    or None where they should be read instead: small, misaligned for their dtype, or mostly
    not in the page cache. Raises OSError where the file cannot be mapped."""
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    if nbytes < MAP_MIN or (offset - start) % itemsize:
        return None
    mm = mmap.mmap(
        fd,
        offset + nbytes - start,
        flags=mmap.MAP_PRIVATE,
        prot=mmap.PROT_READ | mmap.PROT_WRITE,
        offset=start,
    )
    anchor = ctypes.c_char.from_buffer(mm)  # the map's address, held only for the calls
    address, length = ctypes.addressof(anchor), len(mm)
    resident = np.empty(-(-length // mmap.PAGESIZE), np.uint8)
    cached = (
        _MINCORE(address, length, resident.ctypes.data) == 0
        and np.count_nonzero(resident & 1) >= MAP_CACHED * resident.size
    )
    failed = cached and _MADVISE(address, length, _MADV_POPULATE_READ) != 0
    err = ctypes.get_errno()
    del anchor
    if not cached or (failed and err != errno.EINVAL):  # EINVAL: an older kernel
        mm.close()
        return None  # read: from the disk, or again to report where the file ends
    return torch.frombuffer(mm, dtype=torch.uint8, offset=offset - start, count=nbytes)


def read_direct(fd: int, offset: int, nbytes: int, itemsize: int) -> torch.Tensor | None:
    """The bytes read from ``fd`` (opened with ``O_DIRECT``) into a fresh aligned buffer: the
    disk writes them there, no page cache, no copy. None where they start misaligned for
    their dtype within a block. Raises EOFError at a short file, OSError as the read does
    (EINVAL: an alignment the file system refuses)."""
    lo = offset - offset % DIRECT_ALIGN
    if (offset - lo) % itemsize:
        return None
    need = offset + nbytes - lo
    buf = aligned_buffer(-(-need // DIRECT_ALIGN) * DIRECT_ALIGN, DIRECT_ALIGN)
    view = memoryview(buf.numpy()).cast("B")  # type: ignore[arg-type]
    done = 0
    while done < need:
        got = os.preadv(fd, [view[done:]], lo + done)
        if got <= 0:
            raise EOFError
        done += got
    return buf[offset - lo : offset - lo + nbytes]
