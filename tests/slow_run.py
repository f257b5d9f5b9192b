"""`python tests/slow_run.py SECONDS ARGS...`: `gptcourse ARGS` with each training step made SECONDS
longer, so that a test can kill the run mid-way. The delay is patched in here, in the tests, so
that no test-only option ships with the command line. Runs under torchrun too."""

import sys
import time

from gptcourse import train_cli
from gptcourse.cli import main


def slowed(train, seconds: float):
    """`train` with a pause after every step (after the run's own on_step, if it has one)."""
    def slow_train(*args, on_step=None, **kwargs):
        def step_then_wait(state):
            if on_step is not None:
                on_step(state)
            time.sleep(seconds)
        return train(*args, on_step=step_then_wait, **kwargs)
    return slow_train


if __name__ == "__main__":
    train_cli.train = slowed(train_cli.train, float(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
