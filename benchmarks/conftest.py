import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from common import bench_device  # noqa: E402


@pytest.fixture(scope="session")
def device():
    """The device the whole suite times: cuda where present, else cpu (MF_BENCH_DEVICE)."""
    return bench_device()
