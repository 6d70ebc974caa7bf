"""The CI regression gate: quick benchmarks whose *same-run ratios* are compared with a stored baseline.

Absolute times on shared 2-core CI machines swing by 2-15x, so the gate never looks at them. It runs each
fast implementation side by side with its reference in one process and gates on

* correctness: every fast path must still produce output identical to its reference (always enforced);
* speed: the speedup ratio (reference time / fast time) must not fall more than ``max_regression`` below
  the baseline's ratio for the same case.

    python -m hhrnet.benchmarks.gate [--baseline benchmarks/baseline.json] [--max-regression 50%] [--update]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hhrnet.benchmarks.common import Regression, Row, compare, environment, parse_percent, read_rows, write_rows

BASELINE = Path(__file__).resolve().parent / "baseline.json"
KEY_FIELDS = ("benchmark", "case")


@dataclass(frozen=True)
class GateResult:
    rows: list[Row]
    regressions: list[Regression]
    not_identical: list[str]
    missing: list[str]

    @property
    def ok(self) -> bool:
        return not self.not_identical and not self.missing and not any(r.failed for r in self.regressions)


def _decode_rows() -> list[Row]:
    from hhrnet.benchmarks import decode

    out = []
    for row in decode.run(quick=True, repeats=5, port_repeats=3):  # realistic scenes, named by type
        case = f"{row['scene']}/{row['shape']}/T{row['T']}"
        out.append({"benchmark": "decode", "case": case, "speedup": row["speedup_1t"], "identical": row["identical"]})
    return out


def _targets_rows() -> list[Row]:
    from hhrnet.benchmarks import targets

    out = []
    for row in targets.run(people=(30,), sizes=(128,), repeats=10):
        case = f"R{row['size']}/P{row['people']}"
        out.append({"benchmark": "targets", "case": case, "speedup": row["speedup"], "identical": row["identical"]})
    return out


SUITES: dict[str, Callable[[], list[Row]]] = {"decode": _decode_rows, "targets": _targets_rows}


def run_gate(
    baseline: Sequence[Row] | None, *, max_regression: float, suites: Sequence[str] = tuple(SUITES)
) -> GateResult:
    env = environment("cpu")
    rows: list[Row] = []
    for name in suites:
        rows.extend(
            r | {"date": env["date"], "commit": env["commit"], "machine": env["machine"]} for r in SUITES[name]()
        )
    not_identical = [f"{r['benchmark']}/{r['case']}" for r in rows if not r.get("identical", True)]
    regressions: list[Regression] = []
    missing: list[str] = []
    if baseline is not None:
        regressions = compare(
            rows, baseline, key_fields=KEY_FIELDS, metric="speedup", higher_is_better=True,
            max_regression=max_regression,
        )  # fmt: skip
        covered = {r.key for r in regressions}
        for b in baseline:
            key = "/".join(f"{k}={b.get(k)}" for k in KEY_FIELDS)
            if b.get("benchmark") in suites and key not in covered:
                missing.append(key)
    return GateResult(rows, regressions, not_identical, missing)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hhrnet.benchmarks.gate", description=__doc__)
    parser.add_argument("--baseline", type=Path, default=BASELINE)
    parser.add_argument("--max-regression", default="50%")
    parser.add_argument("--update", action="store_true", help="write the measured rows as the new baseline")
    args = parser.parse_args(argv)
    baseline = None if args.update else read_rows(args.baseline)
    result = run_gate(baseline, max_regression=parse_percent(args.max_regression))
    for reg in result.regressions:
        flag = "FAIL" if reg.failed else "ok"
        sys.stdout.write(f"{flag:4}  {reg.key:40}  speedup {reg.current:8.1f}x  baseline {reg.baseline:8.1f}x\n")
    for name in result.not_identical:
        sys.stdout.write(f"FAIL  {name}: fast output differs from the reference\n")
    for key in result.missing:
        sys.stdout.write(f"FAIL  {key}: in the baseline but not measured\n")
    if args.update:
        write_rows(args.baseline, result.rows)
        sys.stdout.write(f"baseline written to {args.baseline}\n")
    return 0 if result.ok or args.update else 1


if __name__ == "__main__":
    raise SystemExit(main())
