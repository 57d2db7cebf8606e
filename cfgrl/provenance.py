"""Where an artefact came from: the cfgrl version, the git commit, the command line and the UTC time.

Every report a run writes (``results.json``, a round's ``round.json``, the demonstration's and the
spread's ``report.json``, the ablation's ``provenance.json``) carries ``record()`` under
``"provenance"``, so a number published from it can be traced to the code and the command that made
it (scripts/docs_results.py prints it under every results table). ``git_dirty`` says whether tracked
files differed from that commit; outside a git checkout (an installed wheel) the git fields are null.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cfgrl

_REPO = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(_REPO), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def record() -> dict[str, Any]:
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "cfgrl_version": cfgrl.__version__,
        "git_commit": commit,
        "git_dirty": None if status is None else bool(status),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else None,
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
