import os

import pytest
import torch

import maskrcnn_fast

CUDA_AVAILABLE = torch.cuda.is_available() and maskrcnn_fast.build_info()["cuda_kernels"]

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(
            not CUDA_AVAILABLE, reason="no GPU, or the CUDA kernels are not built"
        ),
    ),
]


@pytest.fixture(params=DEVICES)
def device(request):
    """Every op test runs on the CPU, and on CUDA where a GPU and the CUDA kernels exist."""
    return request.param


@pytest.fixture
def seed(request):
    """A fresh seed for each test (shown in the test's report) so random inputs differ
    run to run; set MF_SEED to replay one."""
    s = int(os.environ.get("MF_SEED", int.from_bytes(os.urandom(4), "little")))
    torch.manual_seed(s)
    request.node.user_properties.append(("seed", s))
    print(f"seed={s}")
    return s
