"""Shared test fixtures: tiny models and images, one CPU thread; the shared Fashion-MNIST copy."""
import os
import shutil
from pathlib import Path

SHARED_FASHION_MNIST = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "fashion-mnist"
if SHARED_FASHION_MNIST.is_dir():  # before mimmia_core reads it
    os.environ.setdefault("MIMMIA_FASHION_MNIST", str(SHARED_FASHION_MNIST))

import numpy as np
import pytest
import torch

from mimmia_core.config import MAEConfig
from mimmia_core.model import build_model

torch.set_num_threads(1)


@pytest.fixture
def tiny_config() -> MAEConfig:
    """16 px RGB, patch 4 (16 patches), encoder 32 / 2 / 4, decoder 24 / 1 / 3."""
    return MAEConfig(img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=2, num_heads=4,
                     decoder_embed_dim=24, decoder_depth=1, decoder_num_heads=3, mlp_ratio=2.0)


@pytest.fixture
def tiny_model(tiny_config):
    return build_model(tiny_config, seed=0).eval()


@pytest.fixture
def tiny_images() -> torch.Tensor:
    """Six uint8 images (6, 16, 16, 3)."""
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.integers(0, 256, size=(6, 16, 16, 3), dtype=np.uint8))


@pytest.fixture
def inductor():
    """Skips where torch.compile cannot build CPU kernels (no C++ compiler)."""
    if not (shutil.which("g++") or shutil.which("c++")):
        pytest.skip("torch.compile on the CPU needs a C++ compiler (g++)")


# CI installs chromium, the real data and a compiler: a skip there is a missing install step, and fails
# the run. Only skips that no install can lift are allowed.
ALLOWED_SKIPS_IN_CI = ("this machine has a GPU",)
_SKIPPED_IN_CI = []


def pytest_runtest_logreport(report):
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not any(allowed in reason for allowed in ALLOWED_SKIPS_IN_CI):
            _SKIPPED_IN_CI.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if _SKIPPED_IN_CI and exitstatus == 0:
        print("\nCI must run every test; these were skipped (an install step is missing):\n  "
              + "\n  ".join(_SKIPPED_IN_CI))
        session.exitstatus = 1
