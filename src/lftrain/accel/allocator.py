"""Run `lft` on tcmalloc (else jemalloc) when the machine has it: less peak memory than glibc's malloc, whose
fragmented heaps grow with length-grouped batches, and no page-fault cost per step (jemalloc returns freed pages
and faults them back in). Figures: docs/performance.md.

A process's allocator is fixed when it starts (LD_PRELOAD), so the `lft` command re-executes itself once, before
anything heavy is imported: same PID, arguments, environment and terminal, plus LD_PRELOAD. `LFT_ALLOCATOR`
chooses: `auto` (tcmalloc, else jemalloc, else the system's), `tcmalloc`, `jemalloc`, or `system`. The Python API
runs on the allocator its process started with (`LD_PRELOAD=libtcmalloc_minimal.so.4 python ...`). After
training, `release_free_memory` hands freed pages back through the allocator's own entry point, so the final
evaluation does not stack on them. Linux only.
"""

from __future__ import annotations

import ctypes.util
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("lftrain")

ENV = "LFT_ALLOCATOR"
CHOICES = ("auto", "jemalloc", "tcmalloc", "system")
# Passed to the re-executed process only, which removes them at once: the original argv[0], and the
# LD_PRELOAD it had before ours. Programs lftrain starts (torchrun workers, a browser, espeak) then see the
# user's own environment, and a `python -m lftrain` among them makes its own choice.
_ARGV0 = "LFT_ALLOCATOR_ARGV0"
_PRELOAD_BEFORE = "LFT_ALLOCATOR_PRELOAD_BEFORE"
# ctypes.util.find_library names, in the order `auto` tries them
_LIBRARIES = {"tcmalloc": "tcmalloc_minimal", "jemalloc": "jemalloc"}
_ALL_ARENAS = 4096  # jemalloc's MALLCTL_ARENAS_ALL


def in_use() -> str:
    """The allocator this process runs on: 'jemalloc', 'tcmalloc' or 'system'."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    return next((name for name in _LIBRARIES if f"lib{name}" in maps), "system")


def choice() -> str:
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        log.warning("%s=%s is not one of %s; using auto", ENV, value, ", ".join(CHOICES))
        return "auto"
    return value


def find(name: str) -> str | None:
    """The shared library to preload for `name` (a choice), or None when the machine does not have it."""
    if name == "system":
        return None
    for candidate in (_LIBRARIES if name == "auto" else {name: _LIBRARIES[name]}).values():
        found = ctypes.util.find_library(candidate)
        if found:
            return found
    return None


def reexec_command(argv: list[str]) -> tuple[list[str], dict[str, str]] | None:
    """The command and environment that restart this `lft` invocation on the chosen allocator, or None when
    it already runs on it, was told not to, or the machine has no such library."""
    wanted = choice()
    if wanted == "system" or not sys.platform.startswith("linux") or not sys.executable or in_use() != "system":
        return None
    library = find(wanted)
    if library is None:
        return None
    before = os.environ.get("LD_PRELOAD", "")
    env = {**os.environ, "LD_PRELOAD": " ".join(p for p in (library, before) if p), _ARGV0: sys.argv[0],
           _PRELOAD_BEFORE: before}
    return [sys.executable, "-m", "lftrain", *argv], env


def ensure(argv: list[str]) -> None:
    """At the start of the `lft` command: replace this process by itself on the allocator `LFT_ALLOCATOR` asks
    for (see the module docstring). In the re-executed process (and when nothing is to be done) it returns,
    having restored the user's argv[0] and LD_PRELOAD. It re-executes at most once, so a library that does not
    load cannot make it loop."""
    if _ARGV0 in os.environ:  # we are the re-executed process
        sys.argv[0] = os.environ.pop(_ARGV0)
        before = os.environ.pop(_PRELOAD_BEFORE, "")
        if before:
            os.environ["LD_PRELOAD"] = before
        else:
            os.environ.pop("LD_PRELOAD", None)
        return
    command = reexec_command(argv)
    if command is None:
        return
    args, env = command
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(args[0], args, env)


def describe() -> str:
    """For the log: which allocator this process runs on, and how to change it (the manifest records `in_use()`)."""
    name = in_use()
    if name != "system":
        return name
    wanted = choice()
    if wanted == "system":
        return f"system ({ENV}=system)"
    library = find(wanted)
    if library is None:
        return ("system (no tcmalloc/jemalloc library found: install libtcmalloc-minimal4 for faster steps and a "
                "lower peak memory)")
    return f"system (preload it with LD_PRELOAD={library})"


def release_free_memory() -> str:
    """Hand the memory the process has freed back to the operating system (after training, so the final
    evaluation's allocations do not stack on top of the training's freed-but-kept pages). Returns the
    allocator that was asked."""
    name = in_use()
    try:
        process = ctypes.CDLL(None)  # the preloaded allocator's symbols are in the global namespace
        if name == "tcmalloc":
            process.MallocExtension_ReleaseFreeMemory()
        elif name == "jemalloc":
            process.mallctl(f"arena.{_ALL_ARENAS}.purge".encode(), None, None, None, ctypes.c_size_t(0))
        elif sys.platform.startswith("linux"):
            process.malloc_trim(ctypes.c_size_t(0))
    except (OSError, AttributeError) as exc:  # not glibc (musl), or an allocator without the entry point
        log.debug("could not release free memory (%s): %s", name, exc)
    return name
