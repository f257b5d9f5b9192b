"""Shared test set-up: the numeric path of the notebook kernels, one thread, a known seed.

Notebook outputs are stored by `make execute` on the CPU's native numeric path. The tests run
the kernels (which inherit this environment) on PyTorch's portable "default" path instead,
so that a stored output that depends on the CPU fails on the author's machine first, not on a
learner's. Set ATEN_CPU_CAPABILITY yourself (for example avx2) to test another path.
"""

import os

# Before torch is imported anywhere: the capability is read once, at start-up.
os.environ.setdefault("ATEN_CPU_CAPABILITY", "default")
# Progress bars print their final state as text, as in the stored notebooks (gptcourse.progress).
os.environ.setdefault("GPTCOURSE_PROGRESS_FINAL_ONLY", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# nbval waits only 5 s for a finished cell's output messages; a busy laptop can take longer.
NBVAL_OUTPUT_TIMEOUT_S = 120


def pytest_collection_modifyitems(items):
    for item in items:
        if hasattr(item, "output_timeout"):
            item.output_timeout = NBVAL_OUTPUT_TIMEOUT_S


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # The tests use tiny models, which run fastest on one thread (threads only add overhead),
    # and one thread keeps the results the same however busy the machine is.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


# SmolLM2 (chapter 9): loaded once for every test file that reads it, never changed by them.
@pytest.fixture(scope="session")
def smol():
    """SmolLM2-135M-Instruct in LlamaModel, and its tokenizer (gptcourse.smollm2)."""
    from gptcourse.smollm2 import load_smollm2

    return load_smollm2()


@pytest.fixture(scope="session")
def hf_tokenizer():
    """transformers' tokenizer built from the same GGUF file: the independent reference."""
    transformers = pytest.importorskip("transformers")
    from gptcourse.smollm2 import smollm2_path

    path = smollm2_path()
    return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
