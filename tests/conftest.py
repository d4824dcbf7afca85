"""The tests' one home for shared things: the tiny config, tiny models, images and sources, a tiny
experiment and a tiny trained bundle on disk, a free port and a streamlit server; one CPU thread; the
shared Fashion-MNIST copy. Test modules take these as fixtures and never import each other."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_FASHION_MNIST = REPO.parent / "shared" / "datasets" / "fashion-mnist"
if SHARED_FASHION_MNIST.is_dir():  # before mimmia_core reads it
    os.environ.setdefault("MIMMIA_FASHION_MNIST", str(SHARED_FASHION_MNIST))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from mimmia_core.checkpoint import save_checkpoint  # noqa: E402
from mimmia_core.config import MAEConfig  # noqa: E402
from mimmia_core.data import DEMO_DATA, ArraySource  # noqa: E402
from mimmia_core.manifest import make_split, reference_folder, reference_set, training_set  # noqa: E402
from mimmia_core.model import build_model  # noqa: E402
from mimmia_core.train import TrainConfig, train_mae  # noqa: E402

torch.set_num_threads(1)

# 16 px grey, patch 4 (16 patches), encoder 32 x 1, decoder 32 x 1: every test's model
TINY = MAEConfig(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32,
                 decoder_depth=1, decoder_num_heads=2, mlp_ratio=2.0, mean=(0.5,), std=(0.5,))
RGB = dict(in_chans=3, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25))


def random_images(n: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """n uint8 images (n, 16, 16, channels) of uniform noise: nothing to learn."""
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, channels), dtype=np.uint8)


def smooth_images(n: int, seed: int = 0) -> np.ndarray:
    """n uint8 grey images (n, 16, 16, 1) of random low-frequency waves: masked patches are predictable."""
    rng = np.random.default_rng(seed)
    u, v = np.arange(16)[None, :, None], np.arange(16)[None, None, :]
    f, phase = rng.uniform(0.1, 0.5, (2, n, 1, 1)), rng.uniform(0, 2 * np.pi, (2, n, 1, 1))
    waves = 128 + 110 * np.sin(f[0] * u + phase[0]) * np.cos(f[1] * v + phase[1])
    return waves.round().astype(np.uint8)[..., None]


def write_experiment(root: Path, n_images: int = 40, n_refs: int = 2) -> dict:
    """An experiment on disk: random images (npz), a split manifest (6 + 6 per model) and untrained tiny
    MAEs (target, shadow, ref-<i>) as mimmia checkpoints. Returns the paths: data, manifest, target, shadow,
    refs."""
    root = Path(root)
    images, ids = random_images(n_images), np.arange(100, 100 + n_images)
    data = root / "data.npz"
    np.savez(data, images=images, ids=ids, labels=np.arange(n_images) % 3)
    manifest = make_split(ArraySource(images, ids, name="data"), f"npz:{data}", n_members=6, n_nonmembers=6,
                          n_references=n_refs, n_reference_members=4)
    manifest.save(root / "manifest.json")
    paths = dict(data=data, manifest=root / "manifest.json", refs=[])
    for i, name in enumerate(["target", "shadow"] + [reference_folder(r) for r in range(n_refs)]):
        path = save_checkpoint(build_model(TINY, seed=i), root / "models" / name, {"epochs": i})
        if i < 2:
            paths[name] = path
        else:
            paths["refs"].append(path)
    return paths


def build_bundle(out_dir: Path, n_per_set: int = 12, epochs: int = 30) -> Path:
    """A bundle folder laid out like assets/demo (npz data, split manifest, models/target, shadow, ref-0,
    ref-1), its tiny MAEs trained a few seconds each, so every page has real (small) numbers."""
    out_dir, n = Path(out_dir), n_per_set
    images, ids = smooth_images(6 * n), np.arange(1000, 1000 + 6 * n, dtype=np.int64)  # ids that are not positions
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / DEMO_DATA.name, images=images, ids=ids, labels=np.arange(6 * n) % 10)
    source = ArraySource(images, ids, name="tiny")
    manifest = make_split(source, f"npz:{out_dir / DEMO_DATA.name}", n, n, n_references=2, seed=0)
    manifest.save(out_dir / "manifest.json")
    roles = {"target": training_set("target"), "shadow": training_set("shadow"),
             **{reference_folder(i): reference_set(i) for i in range(2)}}  # folder -> the set it trains on
    for i, (name, role) in enumerate(roles.items()):
        model = build_model(TINY, seed=i)
        cfg = TrainConfig(epochs=epochs, batch_size=n, lr=3e-3, warmup_epochs=2, seed=i)
        train_mae(model, source.subset(manifest.ids(role)), cfg, progress=False, device="cpu")
        save_checkpoint(model, out_dir / "models" / name, {"role": role, "epochs": epochs, "data": {"num_images": n}})
    return out_dir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(proc, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"streamlit did not become healthy at {url} within {timeout:.0f} s")
        time.sleep(0.5)


@contextmanager
def _streamlit_server(env: dict, timeout: float = 120.0):
    """`streamlit run app.py` headless on a free localhost port; yields the base URL; always stopped."""
    port = _free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.headless", "true",
           "--server.port", str(port), "--server.address", "localhost", "--browser.gatherUsageStats", "false"]
    with open(env.get("MIMMIA_SERVER_LOG", os.devnull), "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://localhost:{port}"
            _wait_healthy(proc, url, timeout)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ---- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_config() -> MAEConfig:
    return TINY


@pytest.fixture
def tiny_model():
    return build_model(TINY, seed=0).eval()


@pytest.fixture(scope="session")
def make_model():
    """make_model(norm_pix_loss=False, in_chans=1, seed=0): a tiny MAE in eval mode (in_chans 1 or 3)."""
    def make(norm_pix_loss: bool = False, in_chans: int = 1, seed: int = 0):
        config = replace(TINY, norm_pix_loss=norm_pix_loss, **(RGB if in_chans == 3 else {}))
        return build_model(config, seed=seed).eval()
    return make


@pytest.fixture
def tiny_images() -> torch.Tensor:
    """Six uint8 grey images (6, 16, 16, 1)."""
    return torch.from_numpy(random_images(6))


@pytest.fixture(scope="session")
def make_source():
    """make_source(n=11, channels=1, seed=0): random 16 px images with ids 700, 707, ... (not positions)."""
    def make(n: int = 11, channels: int = 1, seed: int = 0) -> ArraySource:
        return ArraySource(random_images(n, channels, seed), ids=np.arange(100, 100 + n) * 7, name=f"rand{seed}")
    return make


@pytest.fixture(scope="session")
def smooth_source():
    """smooth_source(n, seed=0): learnable 16 px grey waves with ids 500, 501, ..."""
    def make(n: int, seed: int = 0) -> ArraySource:
        return ArraySource(smooth_images(n, seed), ids=np.arange(500, 500 + n), name="waves")
    return make


@pytest.fixture(scope="session")
def experiment_writer():
    """experiment_writer(root, n_images=40, n_refs=2) -> paths; see write_experiment."""
    return write_experiment


@pytest.fixture(scope="session")
def tiny_experiment(tmp_path_factory) -> dict:
    """One tiny experiment on disk, shared by the tests that only read it."""
    return write_experiment(tmp_path_factory.mktemp("tiny_experiment"))


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """One trained tiny bundle (what MIMMIA_EXPERIMENT points the dashboard at), shared by the app tests."""
    return build_bundle(tmp_path_factory.mktemp("tiny_bundle"))


@pytest.fixture
def free_port() -> int:
    return _free_port()


@pytest.fixture(scope="session")
def streamlit_server():
    """streamlit_server(env) -> a context manager yielding the URL of `streamlit run app.py`."""
    return _streamlit_server


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


if __name__ == "__main__":  # a bundle to look at: python tests/conftest.py /tmp/tiny
    print(build_bundle(sys.argv[1] if len(sys.argv) > 1 else "/tmp/mimmia-tiny"))
