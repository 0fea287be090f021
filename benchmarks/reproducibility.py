"""How reproducible is a trained model? (README "Reproducibility")

    python benchmarks/reproducibility.py [--model STEM] [--cache FILE] [--threads 1,1,2]

Retrains the head of ``--model`` (default: the shipped one) with its own config on its own
split, once per entry of ``--threads`` (BLAS threads, each run in a fresh child process so the
thread pool really changes), and reports:
  - whether the runs give bit-identical weights and test probabilities (same machine);
  - how far the retrained test probabilities are from those the model's card recorded when it
    was trained (possibly on another machine / library build): median and max |dp| and how
    many test labels (argmax) change.
Writes benchmarks/results/reproducibility.json. Needs the model's feature cache (the cache
it was trained on, or one extracted from the same images: the split digest is checked).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def child(model, cache, threads, out) -> None:
    from threadpoolctl import threadpool_limits

    from busi_lite.features.cache import FeatureCache
    from busi_lite.model.model import Model
    from busi_lite.training import core as T

    m = Model.load(model)
    with FeatureCache(cache) as fc, threadpool_limits(int(threads), user_api="blas"):
        fc = T.with_classes(fc, m.classes)
        sp = m.card.split.check(fc, "the model")  # the one split check: same images, same split
        cfg = m.card.config
        seed = m.card.split.seed
        rows = T.training_rows(fc, sp.train, cfg, seed)
        head, _ = T.train_head(fc, rows, cfg, seed)
        p = T.predict_rows(head, fc, sp.test, cfg).proba
    np.savez(out, proba=p, **head.params)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model stem (default: the shipped model)")
    ap.add_argument("--cache", default="cache/busi_features.h5")
    ap.add_argument("--threads", default="1,1,2", help="BLAS threads of each retraining")
    ap.add_argument("--child", nargs=3, metavar=("CACHE", "THREADS", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.model, *a.child)
        return
    from busi_lite.common.resources import resolve
    from busi_lite.model.model import Model

    stem = resolve("model", a.model).path
    card = Model.load(stem).card
    recorded = np.asarray(card.test_predictions.proba, np.float64)
    runs = []
    tmp = RESULTS / ".repro"
    tmp.mkdir(parents=True, exist_ok=True)
    for i, t in enumerate(a.threads.split(",")):
        out = tmp / f"run{i}.npz"
        subprocess.run([sys.executable, __file__, "--model", str(stem), "--child", a.cache, t, str(out)], check=True)
        with np.load(out, allow_pickle=False) as z:
            p = z["proba"].astype(np.float64)
            digest = hashlib.sha256(b"".join(z[k].tobytes() for k in sorted(z.files) if k != "proba")).hexdigest()
        out.unlink()
        dp = np.abs(p - recorded)
        runs.append({"blas_threads": int(t), "weights_sha256": digest[:16],
                     "median_abs_dp_vs_card": float(np.median(dp)), "max_abs_dp_vs_card": float(dp.max()),
                     "labels_changed_vs_card": int((p.argmax(1) != recorded.argmax(1)).sum()), "n_test": len(p)})
        print(f"BLAS {t}: weights {digest[:16]}  vs the card: median |dp| {np.median(dp):.5f}, max {dp.max():.4f}, "
              f"{runs[-1]['labels_changed_vs_card']} of {len(p)} labels changed")
    tmp.rmdir()
    same = len({r["weights_sha256"] for r in runs}) == 1
    print("same machine, same seeds:", "bit-identical weights" if same else "DIFFERENT weights")
    res = {"command": " ".join(sys.argv), "model": str(stem), "config": card.config.name, "runs": runs,
           "bit_identical_on_this_machine": same}
    (RESULTS / "reproducibility.json").write_text(json.dumps(res, indent=1))
    print(f"wrote {RESULTS / 'reproducibility.json'}")


if __name__ == "__main__":
    main()
