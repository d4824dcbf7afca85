"""DP-SGD (mimmia_core.dp): per-sample gradients of the whole MAE, Opacus's clipping and accountant,
DP training through train_mae and `mimmia train`, and the defenses a checkpoint names."""
import math

import numpy as np
import pytest
import torch
from opacus import GradSampleModule
from opacus.accountants import RDPAccountant
from opacus.optimizers import DPOptimizer

from mimmia_core.checkpoint import describe_checkpoint, load_model
from mimmia_core.cli import main
from mimmia_core.dp import DPConfig, dp_backward, per_sample_grads, plan_dp, poisson_batches
from mimmia_core.model import build_model
from mimmia_core.train import TrainConfig, _epoch_generator, train_mae


def _batch(model, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randn(n, 1, 16, 16, generator=g)
    return imgs, torch.rand(n, model.config.num_patches, generator=g)


def test_per_sample_grads_equal_one_backward_per_image(tiny_config):
    """Raw parameters (cls_token, mask_token) and timm's fused attention get each image's own gradient."""
    model = build_model(tiny_config, seed=1).train()
    assert all(blk.attn.fused_attn for blk in [*model.blocks, *model.decoder_blocks])
    imgs, noise = _batch(model, 3)
    losses, grads = per_sample_grads(model, imgs, 0.75, noise)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(grads) == trainable and {"cls_token", "mask_token"} <= trainable and "pos_embed" not in trainable
    for i in range(3):
        model.zero_grad()
        loss, _, _ = model(imgs[i:i + 1], 0.75, noise[i:i + 1])
        loss.backward()
        assert losses[i].item() == pytest.approx(loss.item(), rel=1e-5)
        for name, p in model.named_parameters():
            if p.requires_grad:
                torch.testing.assert_close(grads[name][i], p.grad, rtol=1e-4, atol=1e-6)
    assert grads["cls_token"].abs().sum() > 0 and grads["mask_token"].abs().sum() > 0


def test_clipping_with_zero_noise_bounds_each_sample(tiny_config):
    """Noise 0: a one-image SGD step (lr 1) moves the weights by that image's gradient, clipped to C."""
    model = build_model(tiny_config, seed=2).train()
    imgs, noise = _batch(model, 4, seed=3)
    _, grads = per_sample_grads(model, imgs, 0.75, noise)
    norms = torch.cat([g.reshape(4, -1) for g in grads.values()], 1).norm(dim=1)  # over all parameters
    clip = norms.median().item()  # two images above the norm, two at or below
    moved = []
    for i in range(4):
        model = build_model(tiny_config, seed=2).train()
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        opt = DPOptimizer(torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0),
                          noise_multiplier=0.0, max_grad_norm=clip, expected_batch_size=1)
        opt.zero_grad()
        dp_backward(model, imgs[i:i + 1], 0.75, noise[i:i + 1])
        opt.step()
        moved.append((torch.cat([p.detach().flatten() for p in model.parameters()]) - before).norm().item())
    for norm, step in zip(norms.tolist(), moved):
        assert step <= clip * (1 + 1e-5)
        assert step == pytest.approx(min(norm, clip * norm / (norm + 1e-6)), rel=1e-4)
    assert sum(n > clip for n in norms.tolist()) == 2  # the clipping was tested, on two of the four


def test_poisson_batches_are_seeded_and_may_be_empty():
    draw = lambda seed: poisson_batches(6, 0.2, 40, torch.Generator().manual_seed(seed))
    a, b = draw(0), draw(0)
    assert len(a) == 40 and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert any(len(x) == 0 for x in a) and len({len(x) for x in a}) > 1  # sizes vary, as Poisson sampling does
    assert 0.1 < sum(len(x) for x in a) / (40 * 6) < 0.3


def test_dp_training_reports_a_rising_epsilon(tiny_config, smooth_source, tmp_path):
    source = smooth_source(16)
    cfg = TrainConfig(epochs=3, batch_size=4, lr=1e-3, warmup_epochs=0, save_epochs=(1, 2),
                      dp=DPConfig(noise_multiplier=1.0, max_grad_norm=0.5))
    losses = train_mae(build_model(tiny_config, seed=0), source, cfg, out_dir=tmp_path, progress=False)
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    records = [load_model(path, "cpu").provenance for path in
               (tmp_path / "epochs" / "epoch-0001", tmp_path / "epochs" / "epoch-0002", tmp_path)]
    dps = [next(d for d in p["defenses"] if d["name"] == "dp-sgd") for p in records]
    assert [p["epochs"] for p in records] == [1, 2, 3]
    assert [d["steps"] for d in dps] == [4, 8, 12]  # 16 images // batch 4 steps per epoch
    assert dps[0]["epsilon"] < dps[1]["epsilon"] < dps[2]["epsilon"]
    accountant = RDPAccountant()
    accountant.history = [(1.0, 4 / 16, 12)]  # sigma, q = batch / N, steps
    assert dps[2]["epsilon"] == pytest.approx(accountant.get_epsilon(delta=0.1 / 16))
    assert dps[2]["delta"] == pytest.approx(0.1 / 16) and dps[2]["max_grad_norm"] == 0.5
    assert [d["name"] for d in records[0]["defenses"]] == ["dp-sgd", "weight-decay", "early-stopping"]
    assert describe_checkpoint(load_model(tmp_path, "cpu"))["defense"].startswith("dp-sgd (epsilon=")


def test_target_epsilon_sets_the_noise(tiny_config, smooth_source):
    run = plan_dp(DPConfig(epsilon=4.0, delta=1e-3), num_samples=64, batch_size=8, epochs=5)
    assert run.steps_per_epoch == 8 and run.sample_rate == 0.125
    assert 4.0 - 0.05 <= run.epsilon(5) <= 4.0 and run.epsilon(2) < run.epsilon(5)
    stronger = plan_dp(DPConfig(epsilon=1.0, delta=1e-3), num_samples=64, batch_size=8, epochs=5)
    assert stronger.noise_multiplier > run.noise_multiplier
    cfg = TrainConfig(epochs=2, batch_size=4, lr=1e-3, warmup_epochs=0, dp={"epsilon": 8.0})
    losses = train_mae(build_model(tiny_config, seed=0), smooth_source(12), cfg, progress=False)
    assert all(math.isfinite(x) for x in losses)


def test_dp_training_is_reproducible(tiny_config, smooth_source):
    cfg = TrainConfig(epochs=2, batch_size=1, lr=1e-3, warmup_epochs=0, dp=DPConfig(noise_multiplier=0.8),
                      augment="crop-flip")
    runs = [train_mae(build_model(tiny_config, seed=0), smooth_source(6), cfg, progress=False) for _ in range(2)]
    assert runs[0] == runs[1] and all(math.isfinite(x) for x in runs[0])
    drawn = [len(b) for e in range(2) for b in poisson_batches(6, 1 / 6, 6, _epoch_generator(0, e, 0))]
    assert 0 in drawn  # the run passed empty Poisson batches (noise-only steps)


@pytest.mark.parametrize("kwargs, flag", [
    (dict(epsilon=0.0), "--dp-epsilon"), (dict(noise_multiplier=-1.0), "--dp-noise"),
    (dict(noise_multiplier=1.0, max_grad_norm=0.0), "--dp-clip"), (dict(epsilon=1.0, delta=1.0), "--dp-delta"),
    (dict(noise_multiplier=1.0, epsilon=1.0), "exactly one"), (dict(), "exactly one"),
    (dict(epsilon=float("nan")), "--dp-epsilon")])
def test_dp_config_refuses(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        DPConfig(**kwargs)


def test_dp_refuses_per_batch_clipping():
    with pytest.raises(ValueError, match="--clip-grad"):
        TrainConfig(clip_grad=1.0, dp=DPConfig(noise_multiplier=1.0))
    with pytest.raises(ValueError, match="dp takes a DPConfig or a dict of max_grad_norm"):
        TrainConfig(dp={"eps": 1.0})  # a study's misspelt setting


@pytest.mark.parametrize("flags, message", [
    (["--dp-epsilon", "-2"], "--dp-epsilon"), (["--dp-noise", "1", "--dp-delta", "2"], "--dp-delta"),
    (["--dp-clip", "1"], "--dp-noise or --dp-epsilon"), (["--dp-noise", "1", "--clip-grad", "1"], "--clip-grad"),
    (["--dp-noise", "1", "--batch-size", "99"], "--batch-size")])
def test_cli_train_refuses_bad_dp_flags(flags, message, tmp_path, capsys):
    np.savez(tmp_path / "d.npz", images=np.zeros((8, 16, 16), np.uint8))
    rc = main(["train", "--data", f"npz:{tmp_path / 'd.npz'}", "--config", "img_size=16", "--out",
               str(tmp_path / "m"), "--epochs", "1", "--device", "cpu", *flags])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err


def test_cli_train_with_dp_records_epsilon(tmp_path, capsys):
    images = np.random.default_rng(0).integers(0, 256, (8, 16, 16), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=images)
    rc = main(["train", "--data", f"npz:{tmp_path / 'd.npz'}", "--preset", "mae_tiny_28", "--config", "img_size=16",
               "--out", str(tmp_path / "m"), "--epochs", "2", "--batch-size", "4", "--device", "cpu",
               "--dp-epsilon", "10", "--dp-delta", "0.01", "--augment", "crop-flip"])
    assert rc == 0, capsys.readouterr().err
    defenses = {d["name"]: d for d in load_model(tmp_path / "m", "cpu").provenance["defenses"]}
    assert 9.0 < defenses["dp-sgd"]["epsilon"] <= 10.0 and defenses["dp-sgd"]["delta"] == 0.01
    assert defenses["augmentation"]["augment"] == "crop-flip"


def test_undefended_model_names_no_defense(tiny_config, smooth_source, tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=4, weight_decay=0.0, warmup_epochs=0)
    train_mae(build_model(tiny_config, seed=0), smooth_source(8), cfg, out_dir=tmp_path, progress=False)
    loaded = load_model(tmp_path, "cpu")
    assert loaded.provenance["defenses"] == [] and describe_checkpoint(loaded)["defense"] == "none"


def test_dp_resume_continues_the_run_and_refuses_another_noise(tiny_config, smooth_source, tmp_path):
    source = smooth_source(8)
    cfg = lambda epochs, **dp: TrainConfig(epochs=epochs, batch_size=2, lr=1e-3, min_lr=1e-3, warmup_epochs=0,
                                           keep_state=True, dp=DPConfig(**dp))  # a constant rate: schedules agree
    train = lambda config, out=None, resume=False: train_mae(build_model(tiny_config, seed=0), source, config,
                                                             out_dir=out, resume=resume, progress=False)
    whole = train(cfg(3, noise_multiplier=0.7))
    train(cfg(2, noise_multiplier=0.7), tmp_path / "a")
    assert train(cfg(3, noise_multiplier=0.7), tmp_path / "a", resume=True) == whole
    record = next(d for d in load_model(tmp_path / "a", "cpu").provenance["defenses"] if d["name"] == "dp-sgd")
    assert record["epsilon"] == pytest.approx(plan_dp(DPConfig(noise_multiplier=0.7), 8, 2, 3).epsilon(3))
    with pytest.raises(ValueError, match="another recipe"):
        train(cfg(4, noise_multiplier=0.5), tmp_path / "a", resume=True)
    train(cfg(2, epsilon=8.0), tmp_path / "b")
    with pytest.raises(ValueError, match="dp_noise_multiplier"):  # a target epsilon over more epochs: more noise
        train(cfg(3, epsilon=8.0), tmp_path / "b", resume=True)


def test_opacus_grad_sample_module_refuses_this_mae(tiny_config):
    """Why mimmia_core.dp computes per-sample gradients itself: Opacus's wrapper takes the MAE's top module
    (raw cls_token and mask_token) as one functorch layer, and refuses it for its buffers."""
    with pytest.raises(NotImplementedError, match="buffers"):
        GradSampleModule(build_model(tiny_config))
