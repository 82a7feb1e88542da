"""A bounded fuzz run over the .pyem reader, inside the test command."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

FUZZ_SECONDS = int(os.environ.get("PYENGINE_FUZZ_SECONDS", "45"))


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None,
                    reason="atheris has no wheel for this platform/Python; the C++ damaged-file tests still run")
def test_fuzz_reader_finds_nothing(tmp_path):
    corpus = tmp_path / "corpus"
    script = os.path.join(os.path.dirname(__file__), "fuzz_reader.py")
    proc = subprocess.run(
        [sys.executable, script, str(corpus), f"-max_total_time={FUZZ_SECONDS}", "-rss_limit_mb=4096",
         f"-artifact_prefix={tmp_path}/", "-print_final_stats=1"],
        capture_output=True, text=True, timeout=FUZZ_SECONDS + 120,
    )
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, f"the fuzzer found a problem:\n{tail}"
    assert "stat::number_of_executed_units" in tail, tail
    runs = int(tail.split("stat::number_of_executed_units:")[1].split()[0])
    assert runs > 1000, f"only {runs} inputs ran:\n{tail}"
