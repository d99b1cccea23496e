"""The tests' own guard (tests/conftest.py): a test that leaves torch's threads changed, itself or through a
module fixture, fails by name and the next test starts from the pinned state again; and the helper that lets a
test run a script's main in-process puts back what ``cli.setup_process`` pins."""

import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from compresslab.cli import setup_process
from compresslab.testing import process_state_restored

_LEAKY = '''
import pytest
import torch


@pytest.fixture(scope="module")
def pinned():
    torch.set_num_threads(2)  # as a script's main calling cli.setup_process in-process


def test_leaks_itself():
    torch.set_num_threads(3)


def test_starts_clean_after_a_leak():
    assert torch.get_num_threads() == 1


def test_leaks_through_a_module_fixture(pinned):
    pass


def test_clean_again():
    assert torch.get_num_threads() == 1
'''


def test_a_leaking_test_fails_by_name_and_the_next_starts_clean(tmp_path):
    shutil.copy(Path(__file__).parents[1] / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_leaky.py").write_text(_LEAKY)
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
                          "-p", "no:randomly", str(tmp_path)], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "4 passed, 2 errors" in text, text  # a teardown failure is an error beside the test's own pass
    assert "test_leaks_itself (or one of its fixtures) left process-wide numerics changed: " \
           "torch.get_num_threads() 1 -> 3" in text, text
    assert "test_leaks_through_a_module_fixture (or one of its fixtures) left process-wide numerics changed: " \
           "torch.get_num_threads() 1 -> 2" in text, text


def test_process_state_restored_undoes_setup_process():
    threads = torch.get_num_threads()
    state = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    with process_state_restored():
        setup_process(threads + 1, seed=7)
        assert torch.get_num_threads() == threads + 1
        torch.rand(3), random.random(), np.random.rand()
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), state[0]) and random.getstate() == state[1]
    assert np.array_equal(np.random.get_state()[1], state[2])
