"""Command line: one verb per job. Run `busi-lite COMMAND --help` for each.

The group lives here; the verbs live in submodules (``data``, ``train``, ``predict``,
``report``) that import :mod:`busi_lite.cli.common` only, so there is no import cycle.
A verb's module is imported only when that verb runs (or ``--help`` lists the verbs):
``busi-lite predict`` never loads the training or web code.
"""

from __future__ import annotations

import importlib
import importlib.util

import click

from busi_lite.cli.common import BusiGroup
from busi_lite.common.constants import VERSION as __version__

# verb -> (module, attribute); the order is the order of `busi-lite --help`
COMMANDS = {
    "data": ("busi_lite.cli.data", "data"), "extract": ("busi_lite.cli.data", "extract"),
    "train": ("busi_lite.cli.train", "train"), "train-box": ("busi_lite.cli.box", "train_box"),
    "sweep": ("busi_lite.cli.train", "sweep"), "select": ("busi_lite.cli.train", "select"),
    "predict": ("busi_lite.cli.predict", "predict"), "evaluate": ("busi_lite.cli.predict", "evaluate"),
    "calibrate": ("busi_lite.cli.site", "calibrate"), "site-cv": ("busi_lite.cli.sitecv", "site_cv"),
    "report": ("busi_lite.cli.report", "report"), "serve": ("busi_lite.cli.serve", "serve"),
    "info": ("busi_lite.cli.info", "info"),
}


class LazyGroup(BusiGroup):
    """The verbs of :data:`COMMANDS`, each imported on first use."""

    def list_commands(self, ctx):
        return list(COMMANDS) + [n for n in super().list_commands(ctx) if n not in COMMANDS]

    def get_command(self, ctx, name):
        if name in COMMANDS and name not in self.commands:
            module, attr = COMMANDS[name]
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
      busi-lite predict img.png                   # one answer (class + sensitive screen), flags, model

    Paths: --data or $BUSI_LITE_DATA; --backbone or $BUSI_LITE_BACKBONE;
    --cache or $BUSI_LITE_CACHE; --model or $BUSI_LITE_MODEL.
    """


# `busi-lite info` (versions, which model/backbone were found): listed when busi_lite.serving.info exists
if importlib.util.find_spec("busi_lite.serving.info") is None:
    del COMMANDS["info"]

if __name__ == "__main__":
    main()
