"""Fixtures (devices, seeds, a tiny checkpoint, one thread, torchvision's kernels restored after every
test) and the collection hook that marks every case using CUDA; shared helpers live in tests/support/."""
import os
import sys

import pytest
import torch

from support import CUDA_AVAILABLE, HAS_PYCOCOTOOLS, NO_CUDA_REASON, NO_PYCOCOTOOLS_REASON

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not CUDA_AVAILABLE, reason=NO_CUDA_REASON)),
]


@pytest.fixture(params=DEVICES)
def device(request):
    """Every op test runs on the CPU, and on CUDA where a GPU and the CUDA kernels exist."""
    return request.param


@pytest.fixture(autouse=True)
def torchvision_kernels_restored():
    """No test leaves our kernels behind torchvision's ops (maskrcnn_fast.accelerate): the other
    tests use torchvision as their oracle. A test that does fails here, after the restore."""
    yield
    acc = sys.modules.get("maskrcnn_fast.accelerate")
    if acc is not None and acc.is_accelerated():
        acc.restore_torchvision()
        pytest.fail("the test left maskrcnn_fast.accelerate_torchvision() in force (now restored)")


@pytest.fixture
def seed(request):
    """A fresh seed for each test (shown in the test's report) so random inputs differ
    run to run; set MF_SEED to replay one."""
    s = int(os.environ.get("MF_SEED", int.from_bytes(os.urandom(4), "little")))
    torch.manual_seed(s)
    request.node.user_properties.append(("seed", s))
    print(f"seed={s}")
    return s


def _is_cuda(value) -> bool:
    if isinstance(value, torch.device):
        return value.type == "cuda"
    return isinstance(value, str) and (value == "cuda" or value.startswith("cuda:"))


def runs_on_cuda(item) -> bool:
    """A test case that uses a CUDA device on a machine that has one: a parameter "cuda" (the
    device fixture, a backend), a skip where CUDA is missing, or its own ``cuda`` mark (device
    mismatches, the fuzz tests that draw a device)."""
    if item.get_closest_marker("cuda") is not None:
        return True
    callspec = getattr(item, "callspec", None)
    if callspec is not None and any(_is_cuda(v) for v in callspec.params.values()):
        return True
    return any(m.kwargs.get("reason") == NO_CUDA_REASON for m in item.iter_markers("skipif"))


def pytest_collection_modifyitems(config, items):
    # scripts/gpu_check.sh selects with -m cuda: by what a case runs on, not by its name; cases
    # marked coco (support.needs_pycocotools) skip where pycocotools is missing.
    for item in items:
        if not HAS_PYCOCOTOOLS and item.get_closest_marker("coco") is not None:
            item.add_marker(pytest.mark.skip(reason=NO_PYCOCOTOOLS_REASON))
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("kernels") == "emu":
            # The emulated CUDA kernels run on the CPU: the GPU machine's time is for the real ones.
            item.own_markers[:] = [m for m in item.own_markers if m.name != "cuda"]
        elif item.get_closest_marker("cuda") is None and runs_on_cuda(item):
            item.add_marker(pytest.mark.cuda)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """An untrained tiny model saved as our checkpoints are (the weights, how to rebuild the
    model, the training run's arguments): the CLI tests' checkpoint, never written to."""
    from support.models import save_tiny_checkpoint

    path = tmp_path_factory.mktemp("ck") / "checkpoint.pt"
    return save_tiny_checkpoint(path, args={"dataset": "synthetic", "image_size": 64})


@pytest.fixture
def one_thread():
    """One intra-op thread for the test (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    small convolutions gain nothing from threads, and on a busy machine idle threads spin."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
