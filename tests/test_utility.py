"""Utility (mimmia_core.utility): the linear probe of a frozen encoder, the held-out reconstruction loss,
and `mimmia utility`."""
import json

import numpy as np
import pytest
import torch

from mimmia_core.checkpoint import save_checkpoint
from mimmia_core.cli import main
from mimmia_core.config import MAEConfig
from mimmia_core.data import ArraySource, load_demo
from mimmia_core.masking import mask_noise
from mimmia_core.model import build_model
from mimmia_core.train import TrainConfig, train_mae
from mimmia_core.utility import encoder_features, linear_probe, probe_split, reconstruction_loss

# 28 px Fashion-MNIST images of the bundled demo, patch 7: small enough to train in seconds
PROBE_CONFIG = MAEConfig(img_size=28, patch_size=7, in_chans=1, embed_dim=64, depth=2, num_heads=2,
                         decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2, mlp_ratio=2.0,
                         mean=(0.5,), std=(0.5,))


@pytest.fixture(scope="module")
def fashion():
    """(pre-training images, probe train, probe test): disjoint labelled sets of the demo's Fashion-MNIST."""
    source = load_demo()
    ids = source.ids[np.random.default_rng(0).permutation(len(source))]
    return tuple(source.subset(np.sort(ids[a:b])) for a, b in ((0, 640), (640, 940), (940, 1240)))


@pytest.fixture(scope="module")
def trained(fashion):
    """A small MAE pre-trained 30 epochs on 640 images (deterministic: seeded, one thread)."""
    model = build_model(PROBE_CONFIG, seed=0)
    train_mae(model, fashion[0], TrainConfig(epochs=30, batch_size=32, lr=2e-3, warmup_epochs=1, weight_decay=0.0),
              progress=False)
    return model.eval()


def test_a_trained_encoder_probes_better_than_random_ones(fashion, trained):
    _, train, test = fashion
    randoms = [linear_probe(build_model(PROBE_CONFIG, seed=s), train, test)[0] for s in range(3)]
    accuracy, classes = linear_probe(trained, train, test)
    assert classes == 10 and 0.1 < max(randoms) < accuracy
    assert linear_probe(trained, train, test, "cls")[0] > max(randoms) - 0.05  # the cls token is also informative


def test_trained_model_reconstructs_held_out_images_better(fashion, trained):
    heldout = fashion[2]
    assert reconstruction_loss(trained, heldout, 0.75) < 0.5 * reconstruction_loss(build_model(PROBE_CONFIG), heldout,
                                                                                  0.75)


def test_features_are_the_unmasked_encoders_tokens(tiny_config, make_source):
    model, source = build_model(tiny_config, seed=3).eval(), make_source(7)
    with torch.no_grad():
        tokens = model.forward_features(model.normalize(torch.from_numpy(source.images(np.arange(7)))))
    np.testing.assert_allclose(encoder_features(model, source, "mean", batch_size=3), tokens[:, 1:].mean(1).numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(encoder_features(model, source, "cls"), tokens[:, 0].numpy(), rtol=1e-5, atol=1e-6)


def test_reconstruction_loss_is_maes_loss_with_seeded_masks(tiny_config, make_source):
    model, source = build_model(tiny_config, seed=4).eval(), make_source(5)
    per_image = []
    with torch.no_grad():
        for i in range(5):  # by hand: one image, its K = 2 masks from (seed, id, k)
            noise = mask_noise(7, source.ids[i:i + 1], 2, 16).reshape(2, 16)
            imgs = model.normalize(torch.from_numpy(source.images([i])))
            per_image.append(model(imgs, 0.5, noise)[0].item())
    for batch_size in (2, 256):
        assert reconstruction_loss(model, source, 0.5, num_masks=2, seed=7, batch_size=batch_size) == \
            pytest.approx(np.mean(per_image), rel=1e-5)


def test_probe_refuses_unlabelled_overlapping_or_one_class(tiny_config, make_source):
    model = build_model(tiny_config)
    images = np.random.default_rng(0).integers(0, 256, (10, 16, 16), dtype=np.uint8)
    labelled = ArraySource(images, labels=np.arange(10) % 2, name="lab")
    with pytest.raises(ValueError, match="no labels"):
        linear_probe(model, make_source(6), labelled)
    with pytest.raises(ValueError, match="shares 3 images"):
        linear_probe(model, labelled.subset(np.arange(0, 6)), labelled.subset(np.arange(3, 10)))
    with pytest.raises(ValueError, match="two or more"):
        linear_probe(model, labelled.subset([0, 2, 4]), labelled.subset([1, 3]))
    train, test = probe_split(labelled, 0.3, seed=1)
    assert len(train) == 7 and len(test) == 3 and not set(train.ids) & set(test.ids)


@pytest.fixture
def cli_files(tmp_path, tiny_config):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "lab.npz", images=rng.integers(0, 256, (24, 16, 16), dtype=np.uint8),
             labels=np.arange(24) % 3)
    np.savez(tmp_path / "plain.npz", images=rng.integers(0, 256, (8, 16, 16), dtype=np.uint8))
    save_checkpoint(build_model(tiny_config, seed=0), tmp_path / "m", {"mask_ratio": 0.5})
    save_checkpoint(build_model(tiny_config, seed=0), tmp_path / "m-no-ratio", {})
    return tmp_path


def test_cli_utility_prints_and_writes_both_numbers(cli_files, capsys):
    out = cli_files / "u.json"
    assert main(["utility", str(cli_files / "m"), "--data", f"npz:{cli_files / 'lab.npz'}", "--probe-split", "0.5",
                 "--num-masks", "2", "--device", "cpu", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert f"linear-probe accuracy {report['probe_accuracy']:.4f}" in printed
    assert f"reconstruction loss {report['reconstruction_loss']:.5f}" in printed
    assert report["mask_ratio"] == 0.5 and report["probe_train_images"] == 12 and report["num_classes"] == 3
    assert report["reconstruction_images"] == 24 and 0 <= report["probe_accuracy"] <= 1


@pytest.mark.parametrize("flags, message", [
    (["--data", "npz:{d}/plain.npz"], "no labels"),
    (["--data", "npz:{d}/lab.npz", "--probe-train", "npz:{d}/lab.npz"], "--probe-test together"),
    (["--data", "npz:{d}/lab.npz", "--probe-split", "1.5"], "--probe-split"),
    (["--data", "npz:{d}/lab.npz", "--probe-train", "npz:{d}/lab.npz", "--probe-test", "npz:{d}/lab.npz"],
     "shares 24 images"),
    (["--data", "npz:{d}/lab.npz", "--out", "{d}"], "is a folder"),
    (["--data", "npz:{d}/lab.npz", "--model-no-ratio"], "--mask-ratio"),
    (["--data", "npz:{d}/lab.npz", "--mask-ratio", "1.0"], "mask_ratio"),
    (["--probe-split", "0.5"], "--data")])
def test_cli_utility_bad_inputs_exit_2(flags, message, cli_files, capsys):
    flags = [f.format(d=cli_files) for f in flags]
    model = str(cli_files / ("m-no-ratio" if "--model-no-ratio" in flags else "m"))
    flags = [f for f in flags if f != "--model-no-ratio"]
    out = [] if "--out" in flags else ["--out", str(cli_files / "u.json")]
    rc = main(["utility", model, "--device", "cpu", *out, *flags])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
