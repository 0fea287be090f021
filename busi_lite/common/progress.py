"""Progress lines for long loops whose stderr is not a terminal (a log file, a pipe)."""

from __future__ import annotations

import sys
import time

PROGRESS_EVERY = 5.0   # s between progress lines when stderr is not a terminal (a log file, a pipe)


class LineProgress:
    """Progress for a log file: one line on ``stream`` at most every ``every`` seconds, and one at the end
    ("extracting: 120/780 images (15 %), 0:25 elapsed, ETA 2:10"). Same calls as click's bar."""

    def __init__(self, total: int, label: str, stream=None, every: float = PROGRESS_EVERY, clock=time.perf_counter):
        self.total, self.done, self.every, self.clock, self.label = int(total), 0, float(every), clock, label
        self.stream = stream if stream is not None else sys.stderr
        self.t0 = self.last = clock()
        self._line()

    def _line(self) -> None:
        el = self.clock() - self.t0
        eta = "?" if not self.done else clock_text(el / self.done * (self.total - self.done))
        print(f"{self.label}: {self.done}/{self.total} images ({100 * self.done / self.total:.0f} %), "
              f"{clock_text(el)} elapsed, ETA {eta}", file=self.stream, flush=True)

    def update(self, n: int) -> None:
        self.done = min(self.total, self.done + int(n))
        if self.clock() - self.last >= self.every:
            self.last = self.clock()
            self._line()

    def render_finish(self) -> None:
        self._line()


def clock_text(s: float) -> str:
    """Seconds as m:ss, or h:mm:ss from one hour on."""
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def progress_bar(total: int, label: str, enabled: bool = True):
    """A click progress bar on a terminal, else :class:`LineProgress` (None when disabled or nothing to do).
    Both take ``update(n)`` and ``render_finish()``."""
    if not enabled or total == 0:
        return None
    if not sys.stderr.isatty():
        return LineProgress(total, label)
    import click

    bar = click.progressbar(length=total, label=label, file=sys.stderr, show_eta=True, show_pos=True)
    bar.render_progress()
    return bar
