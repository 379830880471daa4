"""Ctrl-C and SIGTERM during training: finish the step, checkpoint, stop. A second one aborts."""

from __future__ import annotations

import contextlib
import signal
from typing import Any


class StopSignals:
    """Context manager: SIGINT/SIGTERM set `received` instead of raising; the old handlers come back on exit."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else "signal"

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
