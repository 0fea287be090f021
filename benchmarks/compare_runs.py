"""Compare the select / evaluate / model / box outputs of two runs of the same commands (e.g. before
and after a refactor); sweeps are compared by compare_sweeps.py.

usage: python benchmarks/compare_runs.py DIR_A DIR_B
Each DIR holds select.json (`select --json`), evaluate.json (`evaluate --json`), chosen.{json,npz}
(the selected model) and chosen_box.{json,npz} (`train-box` on it). JSON files: every leaf compared
except config layouts, schema tags, timings (seconds) and the package version; .npz: max |a - b| per array.
"""
import json
import math
import sys

import numpy as np

SKIP = {"config", "schema", "train_seconds", "total_seconds", "seconds", "package_version"}


def leaves(x, p=""):
    if isinstance(x, dict):
        for k, v in x.items():
            if k not in SKIP:
                yield from leaves(v, f"{p}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from leaves(v, f"{p}[{i}]")
    else:
        yield p, x


def same(a, b):
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def cmp_json(a_dir, b_dir, name):
    la = dict(leaves(json.load(open(f"{a_dir}/{name}"))))
    lb = dict(leaves(json.load(open(f"{b_dir}/{name}"))))
    diff = sorted(k for k in set(la) | set(lb) if not same(la.get(k), lb.get(k)))
    print(f"{name}: {len(la)} leaves, {len(diff)} differ")
    for k in diff:
        print(f"    {k}: {la.get(k)!r} -> {lb.get(k)!r}"[:160])


def cmp_npz(a_dir, b_dir, name):
    a, b = np.load(f"{a_dir}/{name}", allow_pickle=False), np.load(f"{b_dir}/{name}", allow_pickle=False)
    for k in sorted(set(a.files) | set(b.files)):
        if k not in a.files or k not in b.files:
            print(f"    {name}:{k} only in {'B' if k in b.files else 'A'}")
            continue
        d = float(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)).max()) if a[k].size else 0.0
        print(f"    {name}:{k:20s} {str(a[k].shape):12s} max|a-b| {d:.3g}  max|a| {float(np.abs(a[k]).max()):.3g}")


if __name__ == "__main__":
    A, B = sys.argv[1:3]
    for n in ("select.json", "evaluate.json", "chosen.json"):
        cmp_json(A, B, n)
    cmp_npz(A, B, "chosen.npz")
    cmp_json(A, B, "chosen_box.json")
    cmp_npz(A, B, "chosen_box.npz")
