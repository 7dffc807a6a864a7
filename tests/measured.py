"""A child process's own cost: wall seconds, CPU seconds and peak RSS (wait4's rusage is that child's alone, so
nothing the test process loaded before counts)."""
from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Measured:
    returncode: int
    seconds: float          # wall: depends on what else the machine runs (the other test process)
    cpu_seconds: float      # user + system: the child's own work, whatever runs beside it
    peak_rss: int           # bytes


def run_measured(argv: list[str], output, timeout: float) -> Measured:
    """Runs argv as a child (stdout and stderr to `output`); a child still running after `timeout` s is killed."""
    started = time.perf_counter()
    with open(output, "wb") as out:
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - started > timeout:
            child.kill()
            pid, status, usage = os.wait4(child.pid, 0)
            break
        time.sleep(0.05)
    child.returncode = os.waitstatus_to_exitcode(status)            # reaped here, not by Popen
    return Measured(child.returncode, time.perf_counter() - started, usage.ru_utime + usage.ru_stime,
                    usage.ru_maxrss * 1024)
