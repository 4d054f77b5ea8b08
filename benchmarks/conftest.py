"""`make bench`: benchmarks run like tests (same harness, real servers) and write docs/BENCHMARKS.md.

Each benchmark owns one section of that file, between `<!-- bench:NAME -->` markers, so running one
benchmark updates its own section and leaves the others as they were. Results are ratios against a
baseline measured in the same run on the same machine, never absolute targets.
"""

import platform
import re
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import *  # noqa: F403 - the same database harness as the test suite

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"
HEADER = """# Benchmarks

Produced by `make bench` (benchmarks/). Each section is rewritten when its benchmark runs; every
number is compared with a baseline measured in the same run, on the same machine.
"""


def timed(func, repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        samples.append(time.perf_counter() - start)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(ordered) * 1000,
        "p95_ms": ordered[int(len(ordered) * 0.95) - 1] * 1000,
        "mean_ms": statistics.fmean(ordered) * 1000,
    }


def write_section(name: str, markdown: str) -> None:
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else HEADER
    stamp = (f"_Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
             f"Python {platform.python_version()}._")
    block = f"<!-- bench:{name} -->\n{markdown.strip()}\n\n{stamp}\n<!-- /bench:{name} -->"
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS_MD.parent.mkdir(parents=True, exist_ok=True)
    BENCHMARKS_MD.write_text(text)


@pytest.fixture
def record_benchmark():
    return write_section
