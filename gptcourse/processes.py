"""Is a process alive, and when did it start: what a run lock needs to tell a live owner from
one that has ended, or from a new process that was given the same id.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

MAX_PID = 2**31 - 1  # process ids are C ints; a larger number in a lock file is not one


def pid_alive(pid: int) -> bool:
    """True if a process with this id exists (whoever owns it)."""
    if not 0 < pid <= MAX_PID:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would send Ctrl+C there: ask Windows instead
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, but belongs to another user
    except OSError:
        return False
    return True


def _windows_pid_alive(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() == 5  # access denied: it exists, another user's
    try:
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def process_start(pid: int) -> str | None:
    """When process `pid` started, as a short text (None if this system cannot tell).

    A process id is reused once its process ends; the start time tells the two processes apart.
    """
    try:  # Linux: field 22 of /proc/PID/stat, clock ticks since boot (after the name in brackets)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        pass
    if os.name != "posix" or Path("/proc/self/stat").exists():
        return None  # Windows, or a Linux where that process has ended
    try:  # macOS and other Unix systems
        found = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True,
                               text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return "-".join(found.stdout.split()) or None
