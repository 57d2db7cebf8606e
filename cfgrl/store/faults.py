"""Crash-test hooks: ``fault_point(name)`` SIGKILLs this process, or parks it until killed, when the
environment variable ``CFGRL_FAULT`` names that point; otherwise it does nothing. The syntax and the
points the store's writer passes are in the docstring of ``cfgrl.store``."""

from __future__ import annotations

import os
import signal
import sys
import time

from cfgrl.errors import CfgrlError

FAULT_ENV = "CFGRL_FAULT"

_fault_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Crash-test hook: SIGKILL this process here, or sleep until killed, when CFGRL_FAULT names
    this point (see the docstring of ``cfgrl.store``); otherwise nothing."""
    spec = os.environ.get(FAULT_ENV, "")
    target, _, action = spec.partition(":")
    point, _, nth = target.partition("@")
    if point != name:
        return
    if action not in ("", "sleep") or not (nth or "1").isdigit():
        raise CfgrlError(f"{FAULT_ENV}={spec!r}: write POINT, POINT@N or either with ':sleep'")
    _fault_hits[name] = _fault_hits.get(name, 0) + 1
    if _fault_hits[name] < int(nth or 1):
        return
    if action == "sleep":
        print(f"cfgrl fault point {name} reached (pid {os.getpid()})", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)
    os.kill(os.getpid(), signal.SIGKILL)
