"""Test setup: Triton kernels run on the CPU interpreter when there is no GPU.

TRITON_INTERPRET must be set before any kernel module is imported (the mode is fixed at decoration).
MASKEDBERT_BLOCK_TRITON=1 makes `import triton` fail (as on macOS/Windows) and skips tests marked
`triton`: the model-level tests then show the package works without it.
"""
import os
import sys

import pytest

BLOCK_TRITON = os.environ.get("MASKEDBERT_BLOCK_TRITON") == "1"


class _BlockTriton:
    """A meta-path finder that refuses `triton` and its submodules, as if it were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name == "triton" or name.startswith("triton."):
            raise ModuleNotFoundError(f"No module named {name!r} (MASKEDBERT_BLOCK_TRITON=1)", name=name)
        return None  # anything else: the other finders decide


if BLOCK_TRITON:
    if any(m == "triton" or m.startswith("triton.") for m in sys.modules):
        raise RuntimeError("MASKEDBERT_BLOCK_TRITON=1 but triton is already imported")
    sys.meta_path.insert(0, _BlockTriton())

try:
    import torch

    _HAS_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    _HAS_CUDA = False

if not _HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "triton: runs Triton kernels (skipped with MASKEDBERT_BLOCK_TRITON=1)")


def pytest_collection_modifyitems(config, items):
    skip_triton = pytest.mark.skip(reason="needs triton (MASKEDBERT_BLOCK_TRITON=1)")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if BLOCK_TRITON and item.get_closest_marker("triton") is not None:
            item.add_marker(skip_triton)
        if not _HAS_CUDA and "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def cuda_device():
    if not _HAS_CUDA:
        pytest.skip("needs a CUDA device")
    return torch.device("cuda")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run as fast on one thread, and two threads on a shared 2-core machine thrash."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def histogram_passes(monkeypatch):
    """Record every launch of topk_radix's data-pass kernel: a list of (args, kwargs), filled as the
    passes start (tensors in it are read at launch, so copy what you need: .tolist())."""
    from maskedbert.kernels import topk_radix

    kernel = topk_radix._radix_histogram_kernel
    launches = []

    class Spy:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                launches.append(([a.tolist() if isinstance(a, torch.Tensor) else a for a in args], kwargs))
                return kernel[grid](*args, **kwargs)

            return launch

    monkeypatch.setattr(topk_radix, "_radix_histogram_kernel", Spy())
    return launches


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A real one-node SLURM on this machine (tests/slurm_cluster.py), SLURM_CONF pointing at it and one
    torch thread per job (as the inline runs the tests compare with); skipped where it cannot start."""
    pytest.importorskip("submitit", reason="submitit not installed (pip install 'maskedbert[slurm]')")
    tests = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, tests)
    try:
        import slurm_cluster as cluster
    finally:
        sys.path.remove(tests)
    folder = str(tmp_path_factory.mktemp("slurm"))
    try:
        started = cluster.start(folder)
    except cluster.ClusterUnavailable as exc:
        pytest.skip(f"no local SLURM cluster: {exc}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", started["conf"])
        patch.setenv("OMP_NUM_THREADS", "1")
        yield started
    cluster.stop(folder)
