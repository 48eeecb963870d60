"""utils.progress: plain lines with ETA when the stream is not a terminal, tqdm when it is."""

from __future__ import annotations

import io
import re

import pytest

from instseg.utils.progress import Progress, default_every, format_duration, progress


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_every_n_with_eta_when_not_a_tty() -> None:
    out = io.StringIO()
    bar = Progress(total=5, desc="train", unit="it", every=2, stream=out)
    assert bar.mode == "lines"
    for i in range(5):
        bar.set_postfix(total_loss=1.0 / (i + 1), lr=0.01)
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert [line.split()[:2] for line in lines] == [["train", "2/5"], ["train", "4/5"],
                                                    ["train", "5/5"]]  # fmt: skip
    assert "(40%)" in lines[0] and "total_loss=0.5 lr=0.01" in lines[0]
    for line in lines:
        assert re.search(r"[\d.e+]+ it/s  elapsed \d+:\d\d:\d\d  ETA (\d+:\d\d:\d\d|\?)$", line)
    assert lines[-1].endswith("ETA 0:00:00")


def test_iterating_counts_and_closes_once() -> None:
    out = io.StringIO()
    items = list(progress(range(7), desc="predict", unit="img", every=3, stream=out))
    assert items == list(range(7))
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["3/7", "6/7", "7/7"]
    assert all("img/s" in line for line in lines)


def test_unknown_total_has_no_eta_and_resume_counts_from_initial() -> None:
    out = io.StringIO()
    bar = Progress(desc="x", every=1, stream=out)
    bar.update(2)
    assert "ETA" not in out.getvalue() and out.getvalue().startswith("x 2 ")
    out = io.StringIO()
    bar = Progress(total=10, initial=8, desc="t", every=1, stream=out)
    bar.update(1)
    assert out.getvalue().startswith("t 9/10 (90%)")


def test_tty_gets_a_tqdm_bar() -> None:
    out = FakeTTY()
    bar = Progress(total=4, desc="train", stream=out)
    assert bar.mode == "bar"
    for _ in range(4):
        bar.update(1)
    bar.close()
    text = out.getvalue()
    assert "4/4" in text and "\r" in text  # tqdm redraws the line in place
    assert not re.search(r"ETA \d", text)  # not the plain lines


def test_disabled_writes_nothing() -> None:
    out = FakeTTY()
    assert list(progress([1, 2], disable=True, stream=out, every=1)) == [1, 2]
    bar = Progress(total=3, disable=True, stream=io.StringIO(), every=1)
    bar.update(3)
    bar.write("hello")
    bar.close()
    assert bar.mode == "off" and out.getvalue() == "" and bar.stream.getvalue() == ""


@pytest.mark.parametrize("value, expected", [("", 20), ("5", 5), ("0", 1), ("abc", 20)])
def test_every_from_the_environment(monkeypatch, value, expected) -> None:  # noqa: ANN001
    monkeypatch.setenv("INSTSEG_LOG_EVERY", value)
    assert default_every() == expected


def test_format_duration() -> None:
    assert format_duration(3725.4) == "1:02:05"
    assert format_duration(-3) == "0:00:00"
