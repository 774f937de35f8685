"""Where the pytest layer keeps the session's State: the keys of pytest's config stash and the accessor."""

from __future__ import annotations

import pytest

from .session import State

STATE_KEY = pytest.StashKey[State]()
ACCOUNTING_KEY = pytest.StashKey[int]()  # the GPU whose NVML accounting this session switched on


def state_of(config: pytest.Config) -> State:
    """The session's State."""
    return config.stash[STATE_KEY]
