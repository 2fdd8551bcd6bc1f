"""The command keeps freed memory for reuse (glibc's thresholds); the library leaves the process alone.

Checked by what the setting is for: page faults. A 64 MiB block allocated,
touched and freed ten times faults its pages in every time with glibc's
defaults (it is above the default mmap threshold's 32 MiB ceiling) and once
with the command's thresholds. Counted with getrusage in a fresh process.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from napari_retina import _malloc

pytestmark = pytest.mark.skipif(_malloc._glibc() is None, reason="needs Linux with glibc")

CYCLES, MIB = 10, 64
PROBE = f"""
import ctypes, resource, sys
hold = sys.argv[1] == "hold"
if hold:
    from napari_retina._malloc import hold_freed_memory
    assert hold_freed_memory() is True
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
n = {MIB} * 2**20
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range({CYCLES}):
    p = libc.malloc(n)
    ctypes.memset(p, 1, n)
    libc.free(p)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60, check=True)
    return int(done.stdout)


def test_held_memory_is_faulted_in_once_not_every_time():
    pages = MIB * 2**20 // 4096
    default, held = faults("default"), faults("hold")
    assert default >= CYCLES * pages // 2  # the control: the defaults fault the block in on every cycle
    assert held <= 2 * pages  # once (or less, with transparent huge pages)


def test_the_console_script_holds_freed_memory_and_main_does_not(monkeypatch):
    from napari_retina import cli

    calls = []
    monkeypatch.setattr(_malloc, "hold_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(sys, "argv", ["napari-retina", "experiment", "no-such-experiment"])
    assert cli.command() == 2 and calls == [1]
    assert cli.main(["experiment", "no-such-experiment"]) == 2 and calls == [1]


RELEASE_PROBE = f"""
import ctypes, os, sys
from napari_retina._malloc import hold_freed_memory, release_freed_memory
assert hold_freed_memory() is True  # a freed 64 MiB block now stays in the heap
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
n = {MIB} * 2**20
p = libc.malloc(n)
ctypes.memset(p, 1, n)
libc.free(p)
held = rss_mib()
if sys.argv[1] == "release":
    release_freed_memory()
print(held - rss_mib())
"""


def test_release_hands_held_memory_back():
    def returned(mode: str) -> float:
        done = subprocess.run([sys.executable, "-c", RELEASE_PROBE, mode], capture_output=True, text=True,
                              timeout=60, check=True)
        return float(done.stdout)

    assert returned("keep") < MIB / 4  # the control: freed memory stays resident
    assert returned("release") > MIB * 3 / 4
