"""Support for the dashboard tests: a tiny experiment bundle, and a streamlit server.

`build_tiny_bundle(dir)` writes a folder laid out like assets/demo (npz data,
split manifest, models/target, shadow, ref-0, ref-1) with tiny MAEs, a few
steps trained, so every page has real (small) numbers. Point the app at it with
MIMMIA_EXPERIMENT=<dir>.
"""
import os
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from mimmia_core.checkpoint import save_checkpoint
from mimmia_core.data import DEMO_DATA, ArraySource
from mimmia_core.manifest import make_split, reference_folder, reference_set, training_set
from mimmia_core.config import MAEConfig
from mimmia_core.model import build_model
from mimmia_core.train import TrainConfig, train_mae
from helpers import free_port

REPO = Path(__file__).resolve().parent.parent
TINY = MAEConfig(img_size=28, patch_size=7, in_chans=1, embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32,
                 decoder_depth=1, decoder_num_heads=2, mlp_ratio=2.0, mean=(0.5,), std=(0.5,))
N_PER_SET = 12


def tiny_images(n: int, seed: int = 0) -> np.ndarray:
    """n smooth grey 28x28 images (blobs and stripes), uint8 (n, 28, 28, 1)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28] / 27.0
    out = np.empty((n, 28, 28, 1), np.uint8)
    for i in range(n):
        cy, cx, r = rng.uniform(0.25, 0.75, 2).tolist() + [rng.uniform(0.1, 0.3)]
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 4) * (xx * np.cos(i) + yy * np.sin(i)))
        img = 0.7 * blob + 0.3 * stripes * rng.uniform(0, 1) + rng.normal(0, 0.03, (28, 28))
        out[i, ..., 0] = np.clip(img * 255, 0, 255).astype(np.uint8)
    return out


def build_tiny_bundle(out_dir, epochs: int = 40) -> Path:
    """A bundle folder like assets/demo, with tiny models; a few seconds on one CPU thread."""
    out_dir = Path(out_dir)
    (out_dir / "models").mkdir(parents=True, exist_ok=True)
    n = N_PER_SET
    images = tiny_images(6 * n)
    ids = np.arange(1000, 1000 + 6 * n, dtype=np.int64)  # ids that are not positions
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
        save_checkpoint(model, out_dir / "models" / name, {"role": role, "epochs": epochs,
                                                           "data": {"num_images": n}})
    return out_dir



@contextmanager
def streamlit_server(env: dict, port: int | None = None, timeout: float = 120.0):
    """`streamlit run app.py` headless on a free port; yields the base URL; always stopped."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.headless", "true",
           "--server.port", str(port), "--server.address", "localhost", "--browser.gatherUsageStats", "false"]
    log = open(env.get("MIMMIA_SERVER_LOG", os.devnull), "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://localhost:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {proc.returncode} before it was healthy")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not become healthy on port {port} within {timeout:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


if __name__ == "__main__":  # build a bundle to look at: python tests/browser_driver.py /tmp/tiny
    torch.set_num_threads(1)
    print(build_tiny_bundle(sys.argv[1] if len(sys.argv) > 1 else "/tmp/mimmia-tiny"))
