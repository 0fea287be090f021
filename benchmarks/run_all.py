"""Run every benchmark, one at a time (they each use both cores), in a fixed order:
extract, train, scale, inference (last: it waits for `busi-lite predict` if needed).

    python benchmarks/run_all.py [--data DIR] [--backbone FILE] [--only extract,train]
                                 [--skip scale] [--quiet-wait 300]

Each script prints its table and writes benchmarks/results/<name>.json
(extract.json, train.json, scale.json + scale.png, inference.json).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

ORDER = ("extract", "train", "scale", "inference")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_asset_args(p)
    p.add_argument("--only", default=",".join(ORDER), help="comma list of: " + ", ".join(ORDER))
    p.add_argument("--skip", default="", help="comma list to leave out")
    C.add_quiet_args(p)
    args = p.parse_args(argv)
    data, backbone = C.data_path(args), C.backbone_path(args)
    todo = [b for b in ORDER if b in args.only.split(",") and b not in args.skip.split(",")]
    failed = []
    for name in todo:
        cmd = [sys.executable, str(C.BENCH / f"bench_{name}.py"), "--data", str(data), "--backbone", str(backbone),
               "--quiet-wait", str(args.quiet_wait)]
        C.log(f"=== {name}: {' '.join(cmd[1:])}")
        t0 = time.perf_counter()
        r = subprocess.run(cmd, cwd=C.REPO)
        C.log(f"=== {name}: exit {r.returncode} after {time.perf_counter() - t0:.0f}s")
        if r.returncode:
            failed.append(name)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
