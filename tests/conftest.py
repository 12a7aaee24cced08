"""Shared fixtures for the lpd test-suite."""

from __future__ import annotations

import os

# TensorFlow prints an INFO line about oneDNN at import; hide INFO logs only.
# (Disabling oneDNN itself would silence it too, but more than doubles step time.)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh, seeded generator for each test."""
    return np.random.default_rng(20261124)
