"""Command line: one verb per job. Run `busi-lite COMMAND --help` for each.

The group lives here; the verbs live in submodules (``data``, ``train``, ``predict``,
``report``) that import :mod:`busi_lite.cli.common` only, so there is no import cycle.
"""

from __future__ import annotations

import importlib.util

import click

from busi_lite.cli.common import BusiGroup
from busi_lite.common.constants import VERSION as __version__


@click.group(cls=BusiGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="busi-lite")
@click.option("--blas-threads", type=click.IntRange(min=1), default=1, show_default=True,
              envvar="BUSI_LITE_BLAS_THREADS", show_envvar=True,
              help="BLAS threads for the heads' small matrix products; 1 is fastest on a busy laptop.")
def main(blas_threads):
    """busi-lite: breast-ultrasound triage on a laptop CPU.

    \b
    Typical use:
      busi-lite data check ~/BUSI                 # inventory, problems, duplicates
      busi-lite extract --data ~/BUSI             # one-time backbone pass -> cache/busi_features.h5
      busi-lite train --lr 1e-4 --batch 32        # seconds; saves models/NAME.npz + .json
      busi-lite sweep --seeds 5                   # the paper's grid over repeated splits
      busi-lite predict img.png                   # label, lesion map, safety flags

    Paths: --data or $BUSI_LITE_DATA; --backbone or $BUSI_LITE_BACKBONE;
    --cache or $BUSI_LITE_CACHE; --model or $BUSI_LITE_MODEL.
    """


def _register():
    from busi_lite.cli.box import train_box
    from busi_lite.cli.data import data, extract
    from busi_lite.cli.predict import evaluate, predict
    from busi_lite.cli.report import report
    from busi_lite.cli.serve import serve
    from busi_lite.cli.site import calibrate
    from busi_lite.cli.train import select, site_cv, sweep, train

    for cmd in (data, extract, train, train_box, sweep, select, predict, evaluate, calibrate, site_cv, report, serve):
        main.add_command(cmd)
    # `busi-lite info` (versions, which model/backbone were found): registered when busi_lite.serving.info exists
    if importlib.util.find_spec("busi_lite.serving.info") is not None:
        from busi_lite.cli.info import info

        main.add_command(info)


_register()

if __name__ == "__main__":
    main()
