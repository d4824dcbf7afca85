import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mimmia_core.checkpoint import CheckpointError, load_own_checkpoint
from mimmia_core.data import ArraySource
from mimmia_core.model import build_model
from mimmia_core.train import STATE_FILE, TrainConfig, lr_at, train_mae

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def train(tiny_config, smooth_source):
    """train(cfg, out_dir=None, resume=False, source=None) -> (model, losses): the tiny MAE on 64 waves."""
    def run(cfg, out_dir=None, resume=False, source=None):
        model = build_model(tiny_config, seed=0)
        losses = train_mae(model, source or smooth_source(64), cfg, out_dir=out_dir, resume=resume,
                           progress=False, device="cpu")
        return model, losses
    return run


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


class Crash(Exception):
    pass


class CrashingSource(ArraySource):
    """Raises on the given call to images(): a training run killed mid-epoch."""

    def __init__(self, source, crash_at):
        super().__init__(source.images(np.arange(len(source))), source.ids, name=source.name)
        self.calls, self.crash_at = 0, crash_at

    def images(self, positions):
        self.calls += 1
        if self.calls == self.crash_at:
            raise Crash
        return super().images(positions)


def test_loss_falls_and_checkpoints(train, tmp_path):
    cfg = TrainConfig(epochs=8, batch_size=16, lr=2e-3, warmup_epochs=1, save_epochs=(2, 5))
    model, losses = train(cfg, tmp_path)
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.7 * losses[0]
    saved = load_own_checkpoint(tmp_path)
    assert_same_weights(saved.model, model)
    assert saved.provenance["epochs"] == 8 and saved.provenance["data"]["num_images"] == 64
    assert sorted(p.name for p in (tmp_path / "epochs").iterdir()) == ["epoch-0002", "epoch-0005"]
    assert load_own_checkpoint(tmp_path / "epochs" / "epoch-0002").provenance["epochs"] == 2
    assert not (tmp_path / STATE_FILE).exists()  # keep_state=False


def test_resume_after_a_crash_is_exact(train, smooth_source, tmp_path):
    cfg = TrainConfig(epochs=4, batch_size=16, lr=2e-3, warmup_epochs=1, keep_state=True)
    straight, straight_losses = train(cfg, tmp_path / "straight")
    assert (tmp_path / "straight" / STATE_FILE).exists()
    with pytest.raises(Crash):  # 4 steps per epoch: dies at the second step of epoch 3
        train(cfg, tmp_path / "resumed", source=CrashingSource(smooth_source(64), crash_at=10))
    assert torch.load(tmp_path / "resumed" / STATE_FILE, weights_only=True)["epoch"] == 2
    resumed, resumed_losses = train(cfg, tmp_path / "resumed", resume=True)
    assert resumed_losses == straight_losses
    assert_same_weights(resumed, straight)


def test_extend_training_with_a_constant_rate_is_exact(train, tmp_path):
    constant = dict(batch_size=16, lr=2e-3, min_lr=2e-3, warmup_epochs=1, keep_state=True)
    straight, straight_losses = train(TrainConfig(epochs=4, **constant))
    _, first = train(TrainConfig(epochs=2, **constant), tmp_path)
    extended, losses = train(TrainConfig(epochs=4, **constant), tmp_path, resume=True)
    assert losses[:2] == first and losses == straight_losses
    assert_same_weights(extended, straight)
    assert load_own_checkpoint(tmp_path).provenance["epochs"] == 4


def test_resume_refuses_another_recipe(train, tmp_path):
    train(TrainConfig(epochs=1, batch_size=16, lr=2e-3, keep_state=True), tmp_path)
    with pytest.raises(ValueError, match="batch_size"):
        train(TrainConfig(epochs=2, batch_size=8, lr=2e-3), tmp_path, resume=True)


def test_compiled_training_matches_eager(train, inductor):
    cfg = TrainConfig(epochs=2, batch_size=16, lr=2e-3, warmup_epochs=1)
    _, eager = train(cfg)
    _, compiled = train(TrainConfig(**{**cfg.__dict__, "compile": True}))
    assert compiled == pytest.approx(eager, rel=1e-4)  # epoch losses: Adam amplifies float noise in near-zero weights


def test_lr_schedule():
    cfg = TrainConfig(epochs=10, warmup_epochs=2, min_lr=1e-5)
    assert lr_at(cfg, 1e-3, 0) == 0
    assert lr_at(cfg, 1e-3, 1) == pytest.approx(5e-4)
    assert lr_at(cfg, 1e-3, 2) == pytest.approx(1e-3)
    assert lr_at(cfg, 1e-3, 6) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)  # half way down the cosine
    assert lr_at(cfg, 1e-3, 10) == pytest.approx(1e-5)
    assert lr_at(TrainConfig(epochs=3, warmup_epochs=0), 1e-3, 0) == pytest.approx(1e-3)


def test_config_and_data_errors(train):
    with pytest.raises(ValueError, match="mask_ratio"):
        TrainConfig(mask_ratio=1.0)
    with pytest.raises(ValueError, match="positive"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="fewer than one batch"):
        train(TrainConfig(epochs=1, batch_size=128))


def test_ddp_two_cpu_processes(tiny_config, smooth_source, free_port, tmp_path):
    """Two gloo processes with the environment torchrun gives them."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "WORLD_SIZE": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port)}
    source = smooth_source(64)
    np.savez(tmp_path / "waves.npz", images=source.images(np.arange(64)), ids=source.ids)
    (tmp_path / "config.json").write_text(json.dumps(tiny_config.to_dict()))
    procs = [subprocess.Popen([sys.executable, str(REPO / "tests" / "ddp_train.py"), str(tmp_path)],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stderr=subprocess.PIPE, text=True)
             for r in (0, 1)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["losses"] == ranks[1]["losses"]  # the epoch loss is averaged over ranks
    losses = ranks[0]["losses"]
    assert len(losses) == 6 and losses[-1] < 0.8 * losses[0]
    saved = load_own_checkpoint(tmp_path / "straight")
    assert saved.provenance["world_size"] == 2
    for k, v in saved.model.state_dict().items():
        assert torch.equal(v, ranks[0]["state"][k]), k
        assert torch.allclose(v, ranks[1]["state"][k], atol=1e-6), k  # DDP keeps the ranks in step
    for rank in ranks:  # resuming under DDP continues exactly, on every rank
        assert rank["resumed_losses"] == losses
        assert all(torch.equal(rank["resumed_state"][k], v) for k, v in rank["state"].items())


class Malicious:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _state_variants(good: dict) -> dict:
    """name -> (bytes of a damaged train_state.pt, the error it must give)."""
    import io
    import pickle

    def saved(obj):
        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.getvalue()
    whole = saved(good)
    return {
        "truncated": (whole[:len(whole) // 2], "not a readable PyTorch checkpoint, or a truncated one"),
        "garbage": (b"\0not a state" * 10, "not a readable PyTorch checkpoint"),
        "malicious": (saved({"model": Malicious()}), "refused to unpickle"),
        "pickle": (pickle.dumps(Malicious()), "refused to unpickle|not a readable PyTorch checkpoint"),
        "a list": (saved([1, 2]), "holds a list, not a dict"),
        "no optimizer": (saved({k: v for k, v in good.items() if k != "optimizer"}), "missing optimizer"),
        "epoch as text": (saved({**good, "epoch": "1"}), "'epoch' is '1'"),
        "losses short": (saved({**good, "losses": []}), "'losses' is not a list of 1 finite floats"),
        "model not tensors": (saved({**good, "model": {"w": 1}}), "'model' is not a dict of tensors"),
        "other shapes": (saved({**good, "model": {"pos_embed": torch.zeros(3)}}),
                         "does not fit this model and optimizer"),
    }


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_resume_refuses_a_damaged_state_file_by_name(train, tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=16, lr=2e-3, keep_state=True)
    train(cfg, tmp_path / "good")
    good = torch.load(tmp_path / "good" / STATE_FILE, weights_only=True)
    for name, (data, message) in _state_variants(good).items():
        out = tmp_path / name.replace(" ", "-")
        out.mkdir()
        (out / STATE_FILE).write_bytes(data)
        with pytest.raises(CheckpointError, match=message) as e:
            train(TrainConfig(epochs=2, batch_size=16, lr=2e-3), out, resume=True)
        text = str(e.value)
        assert str(out / STATE_FILE) in text and "drop --resume" in text and "weights_only=False" not in text, name
        assert (out / STATE_FILE).read_bytes() == data  # left as it was


def test_state_file_is_written_atomically(train, tmp_path, monkeypatch):
    from mimmia_core import atomic
    seen = []
    real = atomic.atomic_write_bytes

    def spy(path, data):
        seen.append(Path(path).name)
        return real(path, data)
    monkeypatch.setattr("mimmia_core.train.atomic_write_bytes", spy)
    train(TrainConfig(epochs=2, batch_size=16, lr=2e-3, keep_state=True), tmp_path)
    assert seen == [STATE_FILE, STATE_FILE]
    assert torch.load(tmp_path / STATE_FILE, weights_only=True)["epoch"] == 2
    assert not list(tmp_path.glob("*.tmp")) and sorted(p.name for p in tmp_path.iterdir()) == \
        ["mimmia.json", "model.safetensors", STATE_FILE]


def test_a_mask_ratio_that_hides_every_patch_is_refused(train):
    with pytest.raises(ValueError, match=r"mask_ratio 0.99 leaves none of the 16 patches visible .* the largest "
                                         r"ratio that keeps one patch visible is 0.9375"):
        train(TrainConfig(epochs=1, batch_size=16, mask_ratio=0.99))
    with pytest.raises(ValueError, match=r"seed must lie in 0..2\*\*63-1, got -1"):
        TrainConfig(seed=-1)
