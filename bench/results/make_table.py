#!/usr/bin/env python3
"""Turns BenchMain's JSON lines into the Markdown tables of bench/README.md.

    python3 bench/results/make_table.py bench/results/2026-11-25-*.jsonl

Conv rows are paired with the libtorch peer's rows of the same shape, batch and pass (same run, same JVM
command), and the ratio ours/torch is printed next to them.
"""
import json
import sys

rows = [json.loads(line) for path in sys.argv[1:] for line in open(path) if line.strip()]
if not rows:
    sys.exit("make_table: no rows")
# Rows written before 2026-11-28 carry no peak: they divided by 522 GFLOP/s, the 2 Zen 5 cores of 2026-11-25.
peak = rows[0].get("peak_gflops", 522.0)
source = rows[0].get("peak_source", "assumed: 2 Zen 5 cores")
print(f"Machine: {rows[0]['machine']}, JDK {rows[0]['jdk']}, date {rows[0]['date']}; times are medians (p99) "
      f"of JMH SampleTime, {rows[0]['threads']} threads; % is of the FP32 FMA peak, {peak:.0f} GFLOP/s ({source}).\n")

def key(r):
    return r["benchmark"].split(".", 1)[1], r["params"]

conv = {key(r): r for r in rows if r["benchmark"].startswith("ConvBench.")}
torch = {key(r): r for r in rows if r["benchmark"].startswith("TorchConvBench.")}
if conv:
    print("| pass | shape (NHWC, 3x3 unless 1->C) | batch | onestep us (p99) | GFLOP/s | % peak | libtorch us | libtorch GFLOP/s | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k in sorted(conv, key=lambda k: (k[0], int(k[1].split("batch=")[1].split(",")[0]), k[1])):
        r, t = conv[k], torch.get(k)
        p = dict(x.split("=") for x in r["params"].strip("{}").split(", "))
        ratio = f"{t['median_us'] / r['median_us']:.2f}x" if t else "-"
        tt = f"{t['median_us']:.0f} | {t['gflops']:.1f}" if t else "- | -"
        print(f"| {k[0]} | {p['shape']} | {p['batch']} | {r['median_us']:.0f} ({r['p99_us']:.0f}) | {r['gflops']:.1f} | "
              f"{r['pct_floor']:.1f} | {tt} | {ratio} |")
    print()
other = [r for r in rows if not r["benchmark"].startswith(("ConvBench.", "TorchConvBench."))]
if other:
    print("| benchmark | params | us (p99) | GFLOP/s | GB/s | % FP32 peak |")
    print("|---|---|---|---|---|---|")
    for r in other:
        pct = f"{r['pct_floor']:.1f}" if r["pct_floor"] >= 0 else "-"
        print(f"| {r['benchmark']} | {r['params'].strip('{}')} | {r['median_us']:.1f} ({r['p99_us']:.1f}) | "
              f"{r['gflops']:.1f} | {r['gbs']:.2f} | {pct} |")
