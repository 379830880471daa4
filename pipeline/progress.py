"""Progress of long work: a tqdm bar in a terminal, a few plain log lines anywhere else.

Every stage makes its bars with `progress(...)` (tqdm's arguments). When stderr is
a terminal that is tqdm itself. Otherwise (CI, `dvc repro > log`, the Prefect flow)
a bar redrawn many times a second would fill the log with carriage returns, so it
becomes a plain line at each 10 % step or after EVERY_S seconds without one, never
two within MIN_S seconds, and a last line when it closes:

    train: 50% 1.60k/3.20k img, 0:10 elapsed, 0:10 left, 160 img/s, loss_d=1.234, loss_g=0.567

`parse_line` reads such a line back; the Prefect flow uses it for its progress
artifact. The format is this module's, not tqdm's, so the two cannot drift apart.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

MIN_S = 5.0  # never two lines closer than this
EVERY_S = 30.0  # a line at least this often while work goes on, even within one 10 % step

LINE = re.compile(
    r"^(?P<desc>[^:]+): (?:(?P<pct>\d+)% )?(?P<done>[^/\s]+)(?:/(?P<total>\S+))? (?P<unit>\S+?),"
    r" (?P<elapsed>\S+) elapsed(?P<rest>.*)$"
)


def interactive() -> bool:
    """Whether progress goes to a terminal (a bar) rather than a log (lines)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def progress(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar in a terminal, a LogProgress elsewhere; both take tqdm's arguments."""
    if interactive():
        return tqdm(iterable, **kwargs)
    return LogProgress(iterable, **kwargs)


class LogProgress(tqdm):
    """tqdm's counting and API, written as occasional whole lines instead of a redrawn bar."""

    def __init__(self, iterable: Iterable | None = None, **kwargs: Any) -> None:
        self._logged_at = -float("inf")
        self._logged_n = None
        self._logged_step = -1
        kwargs["mininterval"] = max(kwargs.get("mininterval") or 0, MIN_S)
        kwargs.setdefault("file", sys.stderr)
        super().__init__(iterable, **kwargs)
        if self.disable:  # tqdm(disable=True) or TQDM_DISABLE: it set up no clock, and says nothing
            return
        self._logged_n = self.n  # the starting point is no progress to report
        self._logged_at = self._time()
        self._logged_step = self._step()

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg is not None or self._logged_n is None:  # tqdm clearing or drawing its first frame
            return False
        return self._log(final=False)

    def close(self) -> None:
        if not self.disable:
            self._log(final=True)
        self.leave = False  # tqdm's close then only "clears" the bar, which display ignores
        super().close()

    def _log(self, final: bool) -> bool:
        now = self._time()  # tqdm's clock, so elapsed and the spacing of lines agree
        if self.n == self._logged_n:
            return False
        step = self._step()
        due = step > self._logged_step or now - self._logged_at >= EVERY_S
        if not final and (now - self._logged_at < MIN_S or not due):
            return False
        self.fp.write(self.line() + "\n")
        self.fp.flush()
        self._logged_at, self._logged_n, self._logged_step = now, self.n, step
        return True

    def _step(self) -> int:
        return int(10 * self.n / self.total) if self.total else -1

    def line(self) -> str:
        """The current state as one plain line (see the module docstring)."""
        d = self.format_dict
        size = (lambda x: tqdm.format_sizeof(x, divisor=d["unit_divisor"])) if d["unit_scale"] else str
        done = size(d["n"])
        if d["total"]:
            done = f"{100 * d['n'] / d['total']:.0f}% {done}/{size(d['total'])}"
        parts = [
            f"{self.desc or 'progress'}: {done} {d['unit']}",
            f"{tqdm.format_interval(d['elapsed'])} elapsed",
        ]
        rate = (d["n"] - d["initial"]) / d["elapsed"] if d["elapsed"] > 0 else 0.0
        if rate > 0 and d["total"]:
            parts.append(f"{tqdm.format_interval(max(0, d['total'] - d['n']) / rate)} left")
        if rate > 0:
            parts.append(f"{size(round(rate, 1)) if d['unit_scale'] else f'{rate:.1f}'} {d['unit']}/s")
        if d["postfix"]:
            parts.append(d["postfix"])
        return ", ".join(parts)


def parse_line(line: str) -> dict[str, str] | None:
    """The fields of a LogProgress line (desc, pct, done, total, unit, elapsed, extra), else None."""
    m = LINE.match(line.strip())
    if not m:
        return None
    fields = {k: v or "" for k, v in m.groupdict().items() if k != "rest"}
    fields["extra"] = m["rest"].lstrip(", ")
    return fields
