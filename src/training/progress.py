"""Progress of long work in the log: how much is done, the rate and the time left.

An epoch's log line carries `progress_note` (open_clip_train shows samples and percent there); evaluation passes log
a `Progress` line at every tenth of the work and at least once a minute, so a long ImageNet pass shows it is moving
and when it will end.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

PARTS = 10  # a line at every tenth of the work
EVERY_S = 60.0  # and at least this often


def duration(seconds: float) -> str:
    """Seconds as H:MM:SS."""
    return str(datetime.timedelta(seconds=round(max(seconds, 0.0))))


def progress_note(done: int, total: int, *, elapsed_s: float, rate_done: int | None = None, unit: str) -> str:
    """`done/total unit (P%), R unit/s, H:MM:SS left`; the rate is `rate_done` (default `done`) over `elapsed_s`,
    so work skipped without cost (a resumed epoch's fast-forward) does not inflate it."""
    rate_done = done if rate_done is None else rate_done
    rate = rate_done / elapsed_s if elapsed_s > 0 else 0.0
    width = len(str(total))
    text = f"{done:>{width}}/{total} {unit} ({100.0 * done / max(total, 1):.0f}%), {rate:.4g} {unit}/s"
    return text + (f", {duration((total - done) / rate)} left" if rate > 0 and total >= done else "")


class Progress:
    """Logs `what: done/total unit (P%), rate, time left` as `update(done)` is called: at every tenth of `total`,
    at least every `every_s` seconds, and at the end. Without a total (a stream of unknown length) it logs done and
    rate every `every_s` seconds. `enabled=False` (ranks other than 0) logs nothing."""

    def __init__(
        self,
        what: str,
        *,
        total: int | None,
        unit: str = "batches",
        every_s: float = EVERY_S,
        enabled: bool = True,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.what, self.total, self.unit, self.every_s, self.enabled, self.clock = (
            what,
            total,
            unit,
            every_s,
            enabled,
            clock,
        )
        self.start = self.last = clock()
        self.next_part = 1

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = self.clock()
        part_reached = bool(self.total) and done * PARTS >= self.next_part * self.total
        if not (part_reached or now - self.last >= self.every_s):
            return
        if self.total:
            self.next_part = done * PARTS // self.total + 1
            note = progress_note(done, self.total, elapsed_s=now - self.start, unit=self.unit)
        else:
            note = f"{done} {self.unit}, {done / max(now - self.start, 1e-9):.4g} {self.unit}/s"
        log.info("%s: %s", self.what, note)
        self.last = now
