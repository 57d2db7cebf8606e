"""Options and error handling shared by every ``cfgrl`` subcommand.

Every stage takes the same two configuration options, so one syntax works everywhere:
``--config FILE.yaml`` and repeatable ``-o section.key=value`` overrides.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from cfgrl.config import Config, load_config
from cfgrl.errors import CfgrlError

ConfigOption = Annotated[
    Optional[Path], typer.Option("--config", "-c", help="YAML file of settings (see `cfgrl config`).")
]
OverrideOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-o", help="Override one setting: section.key=value (repeatable), e.g. -o cfgrl.dropout_prob=0.2."),
]


def resolve(config: Path | None, overrides: list[str] | None, *extra: str) -> Config:
    """Resolve the configuration; ``extra`` are overrides implied by dedicated flags (they win)."""
    return load_config(config, list(overrides or []) + list(extra))


def exits_cleanly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a ``CfgrlError`` into one line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CfgrlError as exc:
            typer.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except PermissionError as exc:  # an unreadable input or a read-only output, wherever it was met
            typer.echo(f"error: {permission_denied(exc)}", err=True)
            sys.exit(2)

    return wrapper


def permission_denied(exc: PermissionError) -> str:
    """Which path, and which permission the user running cfgrl lacks on it."""
    path = Path(exc.filename) if exc.filename else None
    if path is None:
        return f"permission denied ({exc}); give the user running cfgrl access to the files it reads and writes"
    if not path.exists():
        return f"cannot create '{path}': permission denied; give the user running cfgrl write permission on '{path.parent}'"
    if path.is_dir():
        return f"cannot open the directory '{path}': permission denied; give the user running cfgrl read, write and search (rwx) permission on it"
    return f"cannot open '{path}': permission denied; give the user running cfgrl read permission on it (and write permission for an output)"
