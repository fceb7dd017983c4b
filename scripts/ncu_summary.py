#!/usr/bin/env python3
"""Per-kernel summary of an `ncu --csv --page raw` export (scripts/profile-gpu.sh).

Groups the profiled launches by kernel name and prints, per kernel: launches, total and mean
duration, its share of the profiled time, and the mean DRAM and tensor-pipe utilisation, largest
total first. usage: ncu_summary.py RAW.csv [TITLE]"""
import csv
import sys
from collections import defaultdict

TIME = "gpu__time_duration.sum"
DRAM = "dram__throughput.avg.pct_of_peak_sustained_elapsed"
TENSOR = "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active"


def number(s):
    try:
        return float(s.replace(",", ""))
    except ValueError:
        return None


def main():
    rows = list(csv.DictReader(open(sys.argv[1], newline="")))
    title = sys.argv[2] if len(sys.argv) > 2 else sys.argv[1]
    # the raw page has a units row right after the header
    units = rows[0] if rows and number(rows[0].get(TIME, "") or "x") is None else {}
    if units:
        rows = rows[1:]
    scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3}.get(units.get(TIME, "nsecond"), 1e-3)
    groups = defaultdict(lambda: [0, 0.0, 0.0, 0.0])
    for r in rows:
        t = number(r.get(TIME, ""))
        if t is None:
            continue
        name = r.get("Kernel Name", r.get("Function Name", "?"))
        name = name.split("(")[0].split("<")[0][:60]
        g = groups[name]
        g[0] += 1
        g[1] += t * scale
        g[2] += (number(r.get(DRAM, "")) or 0.0) * t
        g[3] += (number(r.get(TENSOR, "")) or 0.0) * t
    total = sum(g[1] for g in groups.values()) or 1.0
    n = sum(g[0] for g in groups.values())
    print(f"### {title}: {n} kernel launches, {total / 1e3:.3f} ms of kernel time\n")
    print("| kernel | launches | total us | share | mean us | DRAM % of peak | tensor pipe % |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, (c, t, d, tc) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
        print(f"| {name} | {c} | {t:.1f} | {100 * t / total:.1f}% | {t / c:.2f} | "
              f"{d / (t / scale):.0f} | {tc / (t / scale):.0f} |")
    print()


if __name__ == "__main__":
    main()
