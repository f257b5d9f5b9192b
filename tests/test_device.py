"""device.explain_compile_errors: torch.compile's backend failure is named; other errors pass as they are."""

import sys

import pytest

from gptcourse.device import explain_compile_errors


def test_other_errors_pass_unchanged():
    with pytest.raises(KeyError, match="not a compile error"), explain_compile_errors():
        raise KeyError("not a compile error")


def test_a_torch_without_dynamo_has_no_backend_failure_to_explain(monkeypatch):
    # The backend's error class lives in the private torch._dynamo; a torch without it raises
    # the original error, not an ImportError from the explanation.
    monkeypatch.setitem(sys.modules, "torch._dynamo.exc", None)  # import now raises ImportError
    with pytest.raises(RuntimeError, match="the original error"), explain_compile_errors():
        raise RuntimeError("the original error")
