"""Progress: a bar in a terminal, a few plain lines in a log (CI, `dvc repro > log`, Prefect)."""

from __future__ import annotations

import io
import itertools
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tqdm import tqdm

from pipeline import progress as P
from tests.conftest import ROOT, env


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr("tqdm.std.time", c)  # tqdm's clock, which LogProgress uses too
    return c


def run(clock: Clock, total: int | None, steps: list[tuple[int, float]], **kw) -> list[str]:
    buf = io.StringIO()
    bar = P.LogProgress(total=total, file=buf, **kw)
    for n, dt in steps:
        clock.t += dt
        bar.update(n)
    bar.close()
    out = buf.getvalue()
    assert "\r" not in out
    return out.splitlines()


def test_a_long_bar_gives_a_line_per_tenth_then_a_last_line(clock):
    # 3 min 20 s of training: 100 updates of 32 images, one every 2 s.
    lines = run(clock, 3200, [(32, 2.0)] * 100, desc="train", unit="img", unit_scale=True)
    assert 10 <= len(lines) <= 12
    assert lines[-1].startswith("train: 100% 3.20k/3.20k img, 03:20 elapsed")
    assert [int(P.parse_line(line)["pct"]) // 10 for line in lines] == list(range(1, 11))
    assert "16.0 img/s" in lines[-1]


def test_a_fast_bar_is_one_line(clock):
    assert run(clock, 400, [(1, 0.001)] * 400, desc="download (synthetic)", unit="img") == [
        "download (synthetic): 100% 400/400 img, 00:00 elapsed, 00:00 left, 1000.0 img/s"
    ]


def test_without_a_total_a_line_every_30_s(clock):
    lines = run(clock, None, [(1, 1.0)] * 95, desc="fetch", unit="img")
    assert len(lines) == 4 and lines[-1] == "fetch: 95 img, 01:35 elapsed, 1.0 img/s"


@settings(max_examples=60, deadline=None)
@given(
    total=st.integers(1, 10_000),
    steps=st.lists(st.tuples(st.integers(0, 500), st.floats(0, 40)), max_size=80),
)
def test_lines_are_spaced_parseable_and_end_with_the_count(total, steps):
    clock = Clock()
    import tqdm.std

    saved, tqdm.std.time = tqdm.std.time, clock
    try:
        times: list[float] = []
        buf = io.StringIO()
        bar = P.LogProgress(total=total, file=buf, desc="train", unit="img")
        for n, dt in steps:
            clock.t += dt
            bar.update(n)
            if buf.getvalue().count("\n") > len(times):
                times.append(clock.t)
        bar.close()
    finally:
        tqdm.std.time = saved
    lines = buf.getvalue().splitlines()
    assert all(b - a >= P.MIN_S for a, b in itertools.pairwise(times))
    elapsed = sum(dt for _, dt in steps)
    assert len(lines) <= 11 + elapsed / P.EVERY_S + 1
    done = sum(n for n, _ in steps)
    if done:
        last = P.parse_line(lines[-1])
        assert last["desc"] == "train" and last["done"] == str(done) and last["total"] == str(total)
        assert last["pct"] == f"{100 * done / total:.0f}"
    else:
        assert lines == []
    assert all(P.parse_line(line) for line in lines)


def test_a_terminal_gets_tqdm_and_a_pipe_gets_lines(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stderr", Tty())
    bar = P.progress(total=3)
    assert type(bar) is tqdm
    bar.close()
    monkeypatch.setattr("sys.stderr", io.StringIO())
    bar = P.progress(total=3)
    assert isinstance(bar, P.LogProgress)
    bar.close()


def test_other_text_is_not_a_progress_line():
    assert P.parse_line("INFO pipeline.train: train: 400 images at 64 px on cpu x1") is None
    assert P.parse_line("train:  50%|#####     | 1.60k/3.20k [00:10<00:10, 160img/s]") is None


def test_a_disabled_bar_says_nothing():
    # Non-writer ranks under torchrun pass disable=True.
    buf = io.StringIO()
    bar = P.LogProgress(range(3), total=3, file=buf, disable=True)
    assert list(bar) == [0, 1, 2]
    bar.close()
    assert buf.getvalue() == ""


def test_tqdm_disable_in_the_environment_is_honoured():
    # tqdm reads TQDM_* when it is imported, so this needs a fresh interpreter.
    code = "from pipeline.progress import progress\nfor _ in progress(range(3), total=3): pass\nprint('ok')"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env() | {"TQDM_DISABLE": "1", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "ok\n", "")
