"""Reports: terminal tables, CSV, and the HTML report with the paper's figures."""

from __future__ import annotations

import csv
import os
from pathlib import Path

TABLE_KEYS = ("malignant_recall", "malignant_far", "malignant_precision", "malignant_auc", "accuracy",
              "macro_f1", "test_loss", "dice", "train_seconds")


def _fmt(d, pct=False) -> str:
    m, lo, hi = d["mean"], d["lo"], d["hi"]
    if m != m:  # nan
        return "-"
    if lo != lo:
        return f"{m:.3f}"
    return f"{m:.3f} [{lo:.2f},{hi:.2f}]"


def sweep_table(summary: list[dict]) -> str:
    """Human table: our mean [95 % CI] over seeds beside the paper's single-split figure."""
    head = f"{'config':14s} {'frac':>4s}  {'recall (paper)':>26s}  {'FAR (paper)':>26s}  " \
           f"{'precision (paper)':>26s}  {'AUC':>18s}  {'accuracy':>18s}  {'Dice':>6s}  {'s/run':>5s}"
    lines = [head, "-" * len(head)]
    for r in summary:
        p = r.get("paper", {})

        def both(key, pkey):
            ours = _fmt(r[key])
            return f"{ours} ({p[pkey]:.3f})" if pkey in p else ours
        dice = r["dice"]["mean"]
        lines.append(f"{r['name']:14s} {r['fraction']:>4g}  {both('malignant_recall', 'malignant_recall'):>26s}  "
                     f"{both('malignant_far', 'malignant_far'):>26s}  "
                     f"{both('malignant_precision', 'malignant_precision'):>26s}  {_fmt(r['malignant_auc']):>18s}  "
                     f"{_fmt(r['accuracy']):>18s}  {'-' if dice != dice else f'{dice:.3f}':>6s}  "
                     f"{r['train_seconds']['mean']:5.1f}")
    return "\n".join(lines)


def write_sweep_csv(summary: list[dict], path) -> None:
    """One row per (config, fraction): mean, lo, hi of each key metric and the paper's figures."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = ["name", "fraction", "n_seeds", "lr", "batch", "epochs", "masks", "balance", "head"]
    for k in TABLE_KEYS + ("malignant_mar",):
        cols += [f"{k}_mean", f"{k}_lo", f"{k}_hi"]
    cols += ["paper_malignant_recall", "paper_malignant_far", "paper_malignant_precision"]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        for r in summary:
            c = r["config"]
            row = {"name": r["name"], "fraction": r["fraction"], "n_seeds": len(r["seeds"]), "lr": c["lr"],
                   "batch": c["batch"], "epochs": c["epochs"], "masks": c["masks"], "balance": c["balance"],
                   "head": c["head"]}
            for k in TABLE_KEYS + ("malignant_mar",):
                for s in ("mean", "lo", "hi"):
                    row[f"{k}_{s}"] = r[k][s]
            for k in ("malignant_recall", "malignant_far", "malignant_precision"):
                row[f"paper_{k}"] = r.get("paper", {}).get(k, "")
            w.writerow(row)
    os.replace(tmp, path)
