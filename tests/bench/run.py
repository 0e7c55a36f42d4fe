"""Run every tests/bench/bench_*.py and print one table of their figures.

A benchmark prints whatever it likes and, for each figure, one line
``FIGURE {"bench": ..., "metric": ..., "value": ..., "unit": ...}`` (see
figures.py). Figures are reported, never asserted: a benchmark fails only
when it could not measure.
"""

import json
import os
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def main():
    rows, broken = [], []
    env_path = "%s:%s" % (ROOT / ".collections", ROOT / "extensions")
    for script in sorted(HERE.glob("bench_*.py")):
        print("=== %s" % script.name, flush=True)
        start = time.monotonic()
        proc = subprocess.run([sys.executable, str(script)], cwd=str(ROOT), capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=env_path), check=False)
        seconds = time.monotonic() - start
        sys.stdout.write(proc.stdout)
        if proc.returncode:
            broken.append(script.name)
            sys.stdout.write(proc.stderr[-3000:])
        for line in proc.stdout.splitlines():
            if line.startswith("FIGURE "):
                fig = json.loads(line[len("FIGURE "):])
                rows.append((fig["bench"], fig["metric"], fig["value"], fig.get("unit", "")))
        rows.append((script.stem, "wall time of the benchmark", round(seconds, 1), "s"))
    width = max([len(r[0]) for r in rows] + [5])
    mwidth = max([len(r[1]) for r in rows] + [6])
    print("\n%-*s  %-*s  %14s  %s" % (width, "bench", mwidth, "metric", "value", "unit"))
    for bench, metric, value, unit in rows:
        print("%-*s  %-*s  %14s  %s" % (width, bench, mwidth, metric, value, unit))
    if broken:
        print("could not measure: %s" % ", ".join(broken))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
