"""Compare two sweep JSONs run by run.

usage: python benchmarks/compare_sweeps.py A.json B.json   (e.g. the same sweep before and after a refactor)

Runs are matched by (config name, fraction, seed); only runs present in both are
compared. For every numeric leaf of each run's "test" metrics and "history" (and
n_train_images, n_train_samples, n_test, split) the max abs difference over the
matched runs is printed; train_seconds (timing) is left out. NaN == NaN counts as 0.
Exit 0 when every difference is 0 and the splits match, 1 otherwise.
"""
import json
import math
import sys


def leaves(x, prefix=""):
    if isinstance(x, dict):
        for k, v in x.items():
            if k == "schema":
                continue
            yield from leaves(v, f"{prefix}.{k}" if prefix else k)
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, x


def key_of(path):
    """history.train_loss[3] -> history.train_loss (max over epochs)."""
    return path.split("[")[0]


def runs(path):
    d = json.load(open(path))
    return {(r["config"]["name"], r["fraction"], r["seed"]): r for r in d["results"]}


def main(a_path, b_path):
    a, b = runs(a_path), runs(b_path)
    both = sorted(set(a) & set(b))
    print(f"{a_path}: {len(a)} runs, {b_path}: {len(b)} runs, compared: {len(both)}")
    for k in both:
        print(f"  {k[0]} frac={k[1]} seed={k[2]}")
    worst, ok = {}, True
    for k in both:
        ra, rb = a[k], b[k]
        if ra["split"] != rb["split"]:
            print(f"SPLIT DIFFERS for {k}: {ra['split']} vs {rb['split']}")
            ok = False
        for part in ("test", "history"):
            la, lb = dict(leaves(ra[part], part)), dict(leaves(rb[part], part))
            if set(la) != set(lb):
                print(f"{k}: keys differ in {part}: {sorted(set(la) ^ set(lb))}")
                ok = False
            for p in set(la) & set(lb):
                va, vb = la[p], lb[p]
                if va is None or vb is None:
                    d = 0.0 if va is vb else math.inf
                elif isinstance(va, (int, float)) and isinstance(vb, (int, float)):
                    d = 0.0 if (va != va and vb != vb) else abs(va - vb)
                else:
                    d = 0.0 if va == vb else math.inf
                worst[key_of(p)] = max(worst.get(key_of(p), 0.0), d)
        for f in ("n_train_images", "n_train_samples", "n_test"):
            worst[f] = max(worst.get(f, 0.0), abs(ra[f] - rb[f]))
    print(f"{'metric':45s} max |a - b|")
    for p in sorted(worst):
        print(f"{p:45s} {worst[p]:.3g}")
        ok &= worst[p] == 0
    print("IDENTICAL" if ok and both else "DIFFERENT" if both else "NO COMMON RUNS")
    return 0 if ok and both else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
