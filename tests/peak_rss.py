"""Running a conversion in a fresh process and reading its peak RSS, for the bounded-memory tests."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).parents[1]

PEAK_SUFFIX = """
peak_kb = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
print(json.dumps({"peak_rss_gb": peak_kb / 2**20, "seconds": time.perf_counter() - start}))
"""


def run_python(code: str, *args: str, capture: bool = False) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with the package and the tests importable."""
    env = {"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        check=True, env=env, cwd=ROOT, capture_output=capture, text=capture,
    )  # fmt: skip


def convert_and_measure(convert: str, *args: str) -> dict:
    """Run ``convert`` (code that converts, timed from ``start``) and return its peak RSS and seconds."""
    code = (
        "import json, re, sys, time\nstart = time.perf_counter()\n" + textwrap.dedent(convert) + PEAK_SUFFIX
    )
    result = run_python(code, *args, capture=True)
    return json.loads(result.stdout.strip().splitlines()[-1])
