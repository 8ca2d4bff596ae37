"""charrnn.allocator: freed blocks stay mapped for the next step, unless the user chose."""

import platform
import subprocess
import sys

import pytest

from charrnn.allocator import _user_chose_thresholds

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

# A fresh interpreter allocates, touches and frees a 64 MB tensor 30 times (as a training step
# does its activations) and prints the page faults the last 10 took: malloc's heap takes a few
# rounds to settle, as a trainer's does in its first steps.
FAULTS = """
import resource, sys, torch
from charrnn.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.ones(16 * 1024 * 1024).sum()
before = faults()
for _ in range(10):
    torch.ones(16 * 1024 * 1024).sum()
print(kept, faults() - before)
"""


def _faults(mode: str, env: dict | None = None) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, env=env, check=True
    )
    kept, faults = done.stdout.split()
    return kept, int(faults)


@glibc
def test_kept_blocks_are_not_faulted_in_again_at_every_allocation():
    _, plain = _faults("plain")
    kept, after = _faults("keep")
    assert kept == "True"
    # Plain malloc maps each 64 MB block afresh: ~16,000 faults of 4 KB pages each time.
    assert plain > 10 * 10_000
    assert after < plain / 10


@glibc
def test_thresholds_the_user_set_are_left_alone():
    env = {"PATH": "", "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"}
    kept, faults = _faults("keep", env)
    assert kept == "False"
    assert faults > 10 * 10_000


@pytest.mark.parametrize(
    "environment, chose",
    [
        ({}, False),
        ({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}, False),
        ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}, True),
        ({"MALLOC_MMAP_THRESHOLD_": "65536"}, True),
        ({"MALLOC_TRIM_THRESHOLD_": "0"}, True),
    ],
)
def test_a_user_choice_is_recognised_in_either_spelling(environment, chose):
    assert _user_chose_thresholds(environment) is chose


@glibc
def test_the_charrnn_command_keeps_freed_memory_as_it_starts():
    code = (
        "import sys; from charrnn.cli import run; import charrnn.allocator as a\n"
        "sys.argv = ['charrnn', '--version']\n"
        "try:\n    run()\nexcept SystemExit:\n    pass\n"
        "print(a.keep_freed_memory.cache_info().currsize)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split()[-1] == "1"


# A fresh interpreter keeping freed memory frees 256 MB of 8 MB blocks and prints its resident
# memory in MB before the release and after.
RELEASE = """
import resource
from charrnn.allocator import keep_freed_memory, release_freed_memory
keep_freed_memory()
def resident():
    pages = int(open("/proc/self/statm").read().split()[1])
    return pages * resource.getpagesize() >> 20
blocks = [bytearray(8 << 20) for _ in range(32)]
for block in blocks:
    block[::4096] = b"x" * len(block[::4096])
del blocks, block
kept = resident()
release_freed_memory()
print(kept, resident())
"""


@glibc
def test_released_memory_leaves_the_process():
    done = subprocess.run([sys.executable, "-c", RELEASE], capture_output=True, text=True,
                          check=True)  # fmt: skip
    kept, released = map(int, done.stdout.split())
    assert kept - released > 200  # the 256 MB freed but kept, then given back
