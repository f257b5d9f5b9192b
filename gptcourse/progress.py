"""Progress bars that read well live and in a saved notebook.

Live (a terminal, or JupyterLab), a bar is tqdm's usual one. A notebook saved with its outputs
would keep only a widget's first frame ("0%"), so when the course's notebooks are executed for
storing or testing (`make execute`, `make test`), the environment variable below asks for a bar
that draws nothing while it runs and prints its final state once, as one line of text.
"""

from __future__ import annotations

import io
import os
import sys

from tqdm.auto import tqdm as live_tqdm
from tqdm.std import tqdm as text_tqdm

FINAL_ONLY_ENV = "GPTCOURSE_PROGRESS_FINAL_ONLY"


class FinalStateBar(text_tqdm):
    """A tqdm bar that stays silent while it runs and prints one line, its final state, on close."""

    def __init__(self, *args, **kwargs):
        kwargs["file"] = io.StringIO()  # the live drawing goes nowhere
        kwargs.setdefault("ascii", False)  # the same block characters as a live bar
        super().__init__(*args, **kwargs)
        self._final_printed = False

    def close(self) -> None:
        if not self.disable and not self._final_printed:
            self._final_printed = True
            print(self, file=sys.stdout, flush=True)
        super().close()


def final_only() -> bool:
    """True when bars should print only their final state (see the module's docstring)."""
    return os.environ.get(FINAL_ONLY_ENV, "") not in ("", "0")


def progress_bar(*args, **kwargs):
    """tqdm's bar (same arguments), or a FinalStateBar when the notebooks are run to be stored."""
    return FinalStateBar(*args, **kwargs) if final_only() else live_tqdm(*args, **kwargs)
