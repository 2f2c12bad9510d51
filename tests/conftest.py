import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run `make gpu-check` on a GPU machine)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # not `"gpu" in keywords`: that also matches a directory named gpu
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """One torch thread for the test: tiny models' ops are far too small to share between threads (on a
    busy 2-core machine two threads made a tiny SD3 forward ~30x slower: 0.8 s against 0.025 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
