"""What every bench script shares: its figures, written as one JSON file when it is given ``--json OUT``.

``make bench`` writes one ``<script>.json`` per script into ``BENCH_OUT`` (data/bench). The files
committed under ``docs/results/benchmarks/`` are what scripts/docs_results.py renders on the docs'
benchmarks page: no figure there is typed. A script prints what it always printed; the file holds the
same numbers, unrounded::

    {"schema": "cfgrl.bench", "schema_version": 1,
     "bench": "relabel",                 the script (bench/relabel.py)
     "about": "...",                     the first paragraph of its docstring
     "args": {...},                      its arguments, defaults included
     "figures": [                        in the order it prints them
       {"name": "...", "value": 0.31, "unit": "s",
        "ratios": {"NAME": 1.05},        value / the value of figure NAME, measured in the same run
        "target": "<= 1.10",             where the script has one
        "headline": true}],              the figure the results index quotes (a few scripts mark one)
     "machine": {...},                   CPU, cores, memory, load average before and after, Python, torch, device
     "provenance": {...}}                cfgrl.provenance.record(): version, commit, command line, UTC time

A script imports this as ``_common`` (bench/ is on the path of a script run from it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from cfgrl import atomic, provenance
from cfgrl.schemas import BENCH


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, metavar="OUT",
                        help="also write the figures, the arguments, the machine and the provenance to OUT (JSON)")


class Figures:
    """The figures one run of a bench script measured, and where they were measured."""

    def __init__(self, script: str, doc: str | None) -> None:
        self.bench = Path(script).stem
        self.about = " ".join((doc or "").strip().split("\n\n")[0].split())  # the docstring's first paragraph, one line
        self.rows: list[dict[str, Any]] = []
        self.machine: dict[str, Any] = {}  # what a script adds here (a renderer, a library's version) joins the machine note
        self.load_before = os.getloadavg()[0]  # taken before the bench loads the machine itself

    def add(self, name: str, value: float, unit: str, *, vs: str | tuple[str, ...] = (), target: str | None = None,
            headline: bool = False) -> float:
        """Record one figure; ``vs``: the figure(s), measured in this run, it is a ratio to. Returns ``value``."""
        if any(row["name"] == name for row in self.rows):
            raise ValueError(f"bench figure {name!r} added twice; figure names are their keys")
        value = value.item() if hasattr(value, "item") else value  # a numpy scalar: JSON writes Python numbers only
        row: dict[str, Any] = {"name": name, "value": value, "unit": unit, "vs": (vs,) if isinstance(vs, str) else tuple(vs)}
        if target is not None:
            row["target"] = target
        if headline:
            row["headline"] = True
        self.rows.append(row)
        return value

    def figures(self) -> list[dict[str, Any]]:
        """The rows with their ratios resolved (a baseline may be added after the figure measured against it)."""
        values = {row["name"]: (row["value"], row["unit"]) for row in self.rows}
        out = []
        for row in self.rows:
            ratios = {}
            for base in row["vs"]:
                if base not in values:
                    raise ValueError(f"bench figure {row['name']!r} is a ratio to {base!r}, which this run did not record")
                value, unit = values[base]
                if unit != row["unit"]:  # a ratio of unlike quantities would mean nothing
                    raise ValueError(f"bench figure {row['name']!r} ({row['unit']}) cannot be a ratio to {base!r} ({unit})")
                ratios[base] = row["value"] / value if value else None
            figure = {k: v for k, v in row.items() if k != "vs"}
            out.append({**figure, "ratios": ratios} if ratios else figure)
        return out

    def write(self, path: Path | None, args: argparse.Namespace, say: bool = True) -> None:
        """Write the JSON file to ``path`` (its folder is made); no ``--json``, nothing to do. ``say``: name it on stderr."""
        if path is None:
            return
        document = {**BENCH.stamp(), "bench": self.bench, "about": self.about, "args": vars(args),
                    "figures": self.figures(), "machine": {**machine(self.load_before), **self.machine},
                    "provenance": provenance.record()}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(path, json.dumps(document, indent=1, default=str) + "\n")  # default=str: Path arguments
        if say:
            print(f"figures written to {path}", file=sys.stderr)  # stderr: what the script prints stays as it was


def machine(load_before: float) -> dict[str, Any]:
    """The machine note: what the figures depend on besides the code."""
    note: dict[str, Any] = {"cpu": _cpu_model(), "cpus": os.cpu_count(), "memory_gib": _memory_gib(),
                            "load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2),
                            "python": platform.python_version()}
    torch = sys.modules.get("torch")  # only where the bench imported it: importing it here would take seconds
    if torch is not None:
        note.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                    device=torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
    return note


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:"))
    except (OSError, StopIteration, ValueError):
        return None
    return round(kib / 2**20, 1)
