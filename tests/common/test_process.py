"""Ending the processes of a multi-process command (faceclip.cli._process.finish)."""

import subprocess
import sys

import pytest

from faceclip.cli._process import finish


def test_one_process_just_returns_the_code():
    assert finish(3) == 3


@pytest.mark.slow
def test_a_process_group_member_exits_with_the_code_and_its_output_flushed(tmp_path):
    code = (
        "import logging, sys, torch.distributed as dist\n"
        "from faceclip.cli._process import finish\n"
        f"dist.init_process_group('gloo', init_method='file://{tmp_path / 'rendezvous'}', rank=0, world_size=1)\n"
        "dist.all_reduce(__import__('torch').ones(1))\n"
        "print('metrics line', end='')\n"
        "logging.basicConfig(); logging.getLogger('x').warning('log line')\n"
        "finish(5)\n"
        "print('not reached')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 5, done.stderr
    assert done.stdout == "metrics line" and "log line" in done.stderr
