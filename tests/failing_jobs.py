"""Stand-ins for the worker's "finish_step" job, importable by the worker's child process:
every tracked step but the first fails there (tests/test_tracker.py), or every step is held
until a file exists (tests/integrations/test_transformers.py)."""

from __future__ import annotations

import os
import time
from typing import Any

from concept_tracker.pipeline import finish_step


def finish_step_after_the_first_fails(step: int, *args: Any) -> Any:
    if step > 0:
        raise RuntimeError("no summary today")
    return finish_step(step, *args)


HELD_FILE = "CONCEPT_TRACKER_TEST_RELEASE"
"""Environment variable naming the file whose creation releases the held steps."""


def finish_step_held(step: int, *args: Any) -> Any:
    deadline = time.monotonic() + 120.0
    while not os.path.exists(os.environ[HELD_FILE]):
        if time.monotonic() > deadline:
            raise RuntimeError(f"step {step} was never released")
        time.sleep(0.05)
    return finish_step(step, *args)
