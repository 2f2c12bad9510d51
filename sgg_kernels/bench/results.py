"""The result file (what `--json` writes) and the stored baselines, one per kind of machine.

A result file is {"format", "machine": machine.machine(), "command", "rows": table rows, "e2e": rows}.
A baseline is a result file saved under baselines/<kind>.json inside this package, so an installed
package compares against it without the repository.
"""
from __future__ import annotations

import json
from pathlib import Path

FORMAT = "sgg-kernels-bench/1"
BASELINES = Path(__file__).resolve().parent / "baselines"
ROW_KEYS = ("op", "provider", "size", "shape", "dtype", "device", "median_s", "q1_s", "q3_s", "min_s", "max_s",
            "rounds", "calls_per_round", "bytes")


def result(info: dict, rows: list[dict], e2e: list[dict], command: str) -> dict:
    return dict(format=FORMAT, machine=info, command=command, rows=[{k: r[k] for k in ROW_KEYS} for r in rows],
                e2e=e2e)


def save(data: dict, path: Path) -> None:
    # One row per line: a baseline reads (and diffs) as a table.
    body = ",\n".join(json.dumps(r) for r in data["rows"])
    head = {k: v for k, v in data.items() if k != "rows"}
    Path(path).write_text(json.dumps(head, indent=1)[:-2] + f',\n "rows": [\n{body}\n]\n}}\n')


def load(path: Path) -> dict:
    data = json.loads(Path(path).read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a result file of `python -m sgg_kernels.bench` (format "
                         f"{data.get('format')!r}, expected {FORMAT!r})")
    return data


def baseline_for(kind: str) -> Path:
    return BASELINES / f"{kind}.json"


def stored_kinds(device: str) -> list[str]:
    """The kinds that have a baseline for this device type (cpu or cuda)."""
    return sorted(p.stem for p in BASELINES.glob(f"{device}-*.json"))
