"""Progress of one explanation, counted in classifier forwards (the same count as the explanation's `forwards`): a
tqdm bar on a terminal; where stderr is a file, a pipe or a service's log, a plain line every LOG_EVERY_S seconds
(INFOLENS_PROGRESS_SECONDS) and one at the end, instead of thousands of carriage-return updates in one line."""
from __future__ import annotations

import os
import sys
import time

# seconds between log lines when stderr is not a terminal; INFOLENS_PROGRESS_SECONDS changes it (0: every batch)
LOG_EVERY_S = float(os.environ.get("INFOLENS_PROGRESS_SECONDS", "10"))


class Progress:
    """`add(n)`: n more forwards are planned (the total grows, e.g. with adaptive N); `update(n)`: n were run;
    `close()`.  Disabled: does nothing.  desc names the image."""

    def __init__(self, desc: str, enabled: bool, stream=None):
        self.stream = stream or sys.stderr
        self.desc, self.enabled = desc, enabled
        self.total = self.done = 0
        self.t0 = self.last = time.perf_counter()
        self.bar = None
        if enabled and hasattr(self.stream, "isatty") and self.stream.isatty():
            from tqdm import tqdm  # only a terminal's bar needs it (start-up)

            self.bar = tqdm(total=0, unit="fwd", desc=desc, delay=1.0, file=self.stream, leave=False)

    def add(self, n: int) -> None:
        self.total += n
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.refresh()

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.perf_counter() - self.last >= LOG_EVERY_S:
            self.last = time.perf_counter()
            self._line()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and (self.last > self.t0 or LOG_EVERY_S == 0):  # a short run that printed nothing stays
            self._line()                                                 # silent

    def _line(self) -> None:
        elapsed = time.perf_counter() - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = f", about {(self.total - self.done) / rate:.0f} s left" if rate and self.done < self.total else ""
        self.stream.write(f"{self.desc}: {self.done}/{self.total} forwards ({100 * self.done / max(self.total, 1):.0f} %) "
                          f"in {elapsed:.0f} s{eta}\n")
        self.stream.flush()
