"""codeindex_common.memory: freed heap memory handed back to the OS (glibc's malloc_trim)."""

import pytest

from codeindex_common.memory import release_free_memory


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024


def test_freed_heap_memory_goes_back_to_the_os():
    """200 MB of 2 KB blocks (the C heap's, as a chunk's text is), freed except every 1,000th (they pin
    the top of the heap, so that glibc cannot just shrink it): RSS stays until the trim, which returns it."""
    if not release_free_memory():
        pytest.skip("not glibc: nothing to trim")
    blocks = [bytes(2048) + i.to_bytes(4, "little") for i in range(100_000)]
    kept = blocks[999::1000]
    high = _rss_mb()
    del blocks
    freed = _rss_mb()
    assert release_free_memory()
    trimmed = _rss_mb()
    assert kept and freed > high - 50, (high, freed)  # glibc kept the freed blocks
    assert trimmed < freed - 100, (high, freed, trimmed)  # and gave them back now
