"""fit_decoder: a fresh decoder under a frozen encoder-only target, trained on the adversary's images.

The frozen encoder plus the fitted decoder reconstructs held-out images better than with the fresh
decoder (seeded masks); the encoder's weights are bit-identical before and after; the checkpoint
loads back, records what it was fitted on, and scores; the CLI writes it and refuses bad inputs
with exit 2; the attack and the Models page point an encoder-only target at it.
"""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from streamlit.testing.v1 import AppTest

from mimmia_core.checkpoint import WEIGHTS_FILE, CheckpointError, decoder_keys, load_model, save_checkpoint
from mimmia_core.cli import main
from mimmia_core.config import MAEConfig
from mimmia_core.data import ArraySource
from mimmia_core.experiment import load_experiment
from mimmia_core.fit_decoder import encoder_fingerprint, fit_decoder, frozen_encoder_fresh_decoder
from mimmia_core.manifest import make_split
from mimmia_core.model import build_model
from mimmia_core.scores import ScoreSpec, score_images
from mimmia_core.train import TrainConfig, train_mae

REPO = Path(__file__).resolve().parent.parent
CONFIG = MAEConfig(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32,
                   decoder_depth=1, decoder_num_heads=2, mlp_ratio=2.0, mean=(0.5,), std=(0.5,))
HELD_OUT_SPEC = ScoreSpec(mask_ratio=0.75, num_masks=4, seed=7)
FIT = dict(epochs=12, batch_size=16, lr=3e-3, warmup_epochs=1.0, seed=0, device="cpu", progress=False)


def waves(n: int, seed: int) -> np.ndarray:
    """n uint8 grey images (n, 16, 16, 1) of random low-frequency waves: masked patches are predictable."""
    rng = np.random.default_rng(seed)
    u, v = np.arange(16)[None, :, None], np.arange(16)[None, None, :]
    f, phase = rng.uniform(0.1, 0.5, (2, n, 1, 1)), rng.uniform(0, 2 * np.pi, (2, n, 1, 1))
    return (128 + 110 * np.sin(f[0] * u + phase[0]) * np.cos(f[1] * v + phase[1])).round().astype(np.uint8)[..., None]


def write_encoder_only(model, path: Path) -> Path:
    """A released encoder: a mimmia checkpoint whose weights file holds no decoder."""
    save_checkpoint(model, path)
    state = load_file(str(path / WEIGHTS_FILE))
    save_file({k: v for k, v in state.items() if k not in set(decoder_keys(state))}, str(path / WEIGHTS_FILE))
    return path


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """A briefly pre-trained tiny MAE, saved whole and as an encoder-only release; the adversary's images."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("fit_decoder")
    model = build_model(CONFIG, seed=3)
    train_mae(model, ArraySource(waves(32, seed=1)), TrainConfig(epochs=10, batch_size=16, lr=3e-3, warmup_epochs=1),
              progress=False, device="cpu")
    adversary = ArraySource(waves(48, seed=2), name="adversary")
    np.savez(root / "adversary.npz", images=waves(48, seed=2)[..., 0])
    return dict(full=save_checkpoint(model, root / "full"), encoder=write_encoder_only(model, root / "encoder"),
                adversary=adversary, held_out=ArraySource(waves(32, seed=4), name="held-out"), root=root)


def held_out_loss(model, source) -> float:
    return float(score_images(model, source, HELD_OUT_SPEC, device="cpu").per_mask.mean())


def test_fitting_lowers_the_held_out_loss_and_keeps_the_encoder(target):
    encoder = load_model(target["encoder"])
    assert not encoder.has_decoder
    before_state = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    fresh = frozen_encoder_fresh_decoder(encoder, seed=0).eval()
    before = held_out_loss(fresh, target["held_out"])
    fitted = fit_decoder(encoder, target["adversary"], **FIT)
    after = held_out_loss(fitted.model, target["held_out"])
    assert after < 0.5 * before, (before, after)
    losses = fitted.provenance["decoder_fitted"]["losses"]
    assert len(losses) == FIT["epochs"] and losses[-1] < losses[0]
    # every encoder weight (patch_embed, cls_token, pos_embed, blocks, norm) is bit-identical, in both models
    enc = [k for k in before_state if k not in set(decoder_keys(before_state))]
    assert {k.split(".")[0] for k in enc} == {"patch_embed", "cls_token", "pos_embed", "blocks", "norm"}
    fitted_state = fitted.model.state_dict()
    assert all(torch.equal(fitted_state[k], before_state[k]) for k in enc)
    assert all(torch.equal(v, before_state[k]) for k, v in encoder.model.state_dict().items())
    assert encoder_fingerprint(fitted.model) == encoder_fingerprint(encoder.model)
    # the decoder did train (every decoder parameter that requires grad moved from its fresh init)
    fresh_state = fresh.state_dict()
    trained = [k for k, p in fresh.named_parameters() if p.requires_grad]
    assert set(trained) == {k for k in decoder_keys(fresh_state) if k != "decoder_pos_embed"}
    assert all(not torch.equal(fitted_state[k], fresh_state[k]) for k in trained)


def test_the_checkpoint_loads_back_records_its_fit_and_scores(target, tmp_path):
    encoder = load_model(target["encoder"])
    fitted = fit_decoder(encoder, target["adversary"], **{**FIT, "epochs": 2}, out_dir=tmp_path / "fitted")
    loaded = load_model(tmp_path / "fitted")
    assert loaded.has_decoder and loaded.source_format == "mimmia" and loaded.fingerprint == fitted.fingerprint
    fit = loaded.provenance["decoder_fitted"]
    assert fit["data"] == {"name": "adversary", "spec": None, "fingerprint": target["adversary"].fingerprint(),
                           "num_images": 48}
    assert fit["budget"] == {"epochs": 2, "images": 48, "steps": 2 * 3, "image_passes": 2 * 3 * 16}
    assert fit["encoder"]["weights_fingerprint"] == encoder_fingerprint(encoder.model)
    assert fit["encoder"]["fingerprint"] == encoder.fingerprint and fit["encoder"]["had_decoder"] is False
    np.testing.assert_array_equal(score_images(loaded.model, target["held_out"], HELD_OUT_SPEC).per_mask,
                                  score_images(fitted.model, target["held_out"], HELD_OUT_SPEC).per_mask)


def test_a_model_with_a_decoder_is_refused_unless_replaced(target):
    full = load_model(target["full"])
    with pytest.raises(ValueError, match="already has a decoder.*replace_decoder=True"):
        fit_decoder(full, target["adversary"], **FIT)
    # replacing gives exactly what fitting the encoder-only release gives: the old decoder plays no part
    replaced = fit_decoder(full, target["adversary"], **{**FIT, "epochs": 1}, replace_decoder=True)
    released = fit_decoder(load_model(target["encoder"]), target["adversary"], **{**FIT, "epochs": 1})
    a, b = replaced.model.state_dict(), released.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert replaced.provenance["decoder_fitted"]["encoder"]["had_decoder"] is True


def test_the_fresh_decoder_may_take_another_shape(target, tmp_path, capsys):
    encoder = load_model(target["encoder"])
    shape = {"decoder_embed_dim": 16, "decoder_depth": 2, "decoder_num_heads": 4}
    fitted = fit_decoder(encoder, target["adversary"], **{**FIT, "epochs": 1}, decoder=shape)
    assert {k: getattr(fitted.config, k) for k in shape} == shape and fitted.config.embed_dim == 32
    assert fitted.provenance["decoder_fitted"]["decoder"] == {**shape, "norm_pix_loss": False}
    assert encoder_fingerprint(fitted.model) == encoder_fingerprint(encoder.model)
    with pytest.raises(ValueError, match=r"--decoder-config sets the fresh decoder's .* not \['embed_dim'\]"):
        fit_decoder(encoder, target["adversary"], **FIT, decoder={"embed_dim": 16})
    with pytest.raises(ValueError, match="--decoder-config: decoder width 16 is not divisible by its 3 heads"):
        fit_decoder(encoder, target["adversary"], **FIT, decoder={"decoder_embed_dim": 16, "decoder_num_heads": 3})
    code = main(["fit-decoder", "--encoder", str(target["encoder"]), "--data", f"npz:{target['root']}/adversary.npz",
                 "--out", str(tmp_path / "out"), "--decoder-config", "decoder_depth=two", "--device", "cpu"])
    assert code == 2 and "--decoder-config takes KEY=VALUE" in capsys.readouterr().err


def test_bad_settings_are_refused(target):
    encoder = load_model(target["encoder"])
    with pytest.raises(ValueError, match="expects 16x16 with 1 channel"):
        fit_decoder(encoder, ArraySource(np.zeros((20, 8, 8), np.uint8)), **FIT)
    with pytest.raises(ValueError, match="--lr"):
        fit_decoder(encoder, target["adversary"], **{**FIT, "lr": 0.0})
    with pytest.raises(ValueError, match="fewer than one batch"):
        fit_decoder(encoder, target["adversary"], **{**FIT, "batch_size": 64})
    with pytest.raises(ValueError, match="LoadedModel"):
        fit_decoder(encoder.model, target["adversary"], **FIT)


def test_cli_fits_writes_and_reports(target, tmp_path, capsys):
    out = tmp_path / "fitted"
    code = main(["fit-decoder", "--encoder", str(target["encoder"]), "--data", f"npz:{target['root']}/adversary.npz",
                 "--out", str(out), "--epochs", "2", "--batch-size", "16", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert "on 48 images" in capsys.readouterr().out
    loaded = load_model(out)
    assert loaded.provenance["data_spec"] == f"npz:{target['root']}/adversary.npz"
    assert loaded.provenance["decoder_fitted"]["budget"]["epochs"] == 2


def test_cli_fits_on_a_manifests_sets(target, tmp_path, capsys):
    source = ArraySource(waves(60, seed=5), name="pool")
    np.savez(tmp_path / "pool.npz", images=waves(60, seed=5)[..., 0])
    split = make_split(source, f"npz:{tmp_path}/pool.npz", n_members=10, n_nonmembers=10)
    split.source_fingerprint = source.fingerprint()
    split.save(tmp_path / "split.json")
    code = main(["fit-decoder", "--encoder", str(target["encoder"]), "--manifest", str(tmp_path / "split.json"),
                 "--out", str(tmp_path / "fitted"), "--epochs", "1", "--batch-size", "8", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    fit = load_model(tmp_path / "fitted").provenance
    assert fit["sets"] == ["shadow_members", "shadow_nonmembers"] and fit["decoder_fitted"]["data"]["num_images"] == 20


@pytest.mark.parametrize("extra, message", [
    (["--epochs", "0"], "epochs and batch_size must be positive"),
    (["--lr", "-1"], "--lr"),
    (["--mask-ratio", "1.5"], "mask"),
    (["--sets", "shadow_members"], "--sets picks image sets from a --manifest"),
    (["--encoder-is-full"], "already has a decoder; pass replace_decoder=True (--replace-decoder)"),
    (["--no-data"], "give --data SPEC"),
    (["--missing-encoder"], "no such file"),
])
def test_cli_bad_inputs_exit_2(target, tmp_path, capsys, extra, message):
    encoder = {"--encoder-is-full": target["full"], "--missing-encoder": tmp_path / "nowhere"}.get(
        extra[0], target["encoder"])
    data = [] if extra == ["--no-data"] else ["--data", f"npz:{target['root']}/adversary.npz"]
    flags = [] if extra[0] in ("--encoder-is-full", "--no-data", "--missing-encoder") else extra
    code = main(["fit-decoder", "--encoder", str(encoder), *data, "--out", str(tmp_path / "out"), "--batch-size", "16",
                 "--device", "cpu", *flags])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "out" / "mimmia.json").exists()


def test_the_attack_points_an_encoder_only_target_at_fit_decoder(target, tmp_path):
    held, adversary = target["held_out"], target["adversary"]
    experiment = load_experiment(target["encoder"], members=held, nonmembers=adversary, device="cpu")
    assert any("mimmia fit-decoder --encoder" in note for note in experiment.notes)
    with pytest.raises(CheckpointError, match="encoder-only.*mimmia fit-decoder --encoder .* --out DIR"):
        experiment.target.require_decoder()


def test_models_page_fits_a_decoder_to_an_encoder_only_checkpoint(target, tmp_path):
    """The Models page offers 'fit a decoder on my data' for an encoder-only model, with a progress bar."""
    if str(REPO) not in sys.path:  # app_pages, as `streamlit run app.py` finds it
        sys.path.insert(0, str(REPO))
    at = AppTest.from_file(str(REPO / "app_pages" / "models.py"), default_timeout=120)
    at.session_state["models_source"] = "path"
    at.run()
    at.text_input(key="models_path").input(str(target["encoder"])).run()
    assert not at.exception and "Encoder-only" in at.warning[0].value
    assert at.button(key="fit_go").disabled  # no images named yet
    at.text_input(key="fit_data").input(f"npz:{target['root']}/adversary.npz")
    at.text_input(key="fit_out").input(str(tmp_path / "fitted"))
    at.number_input(key="fit_epochs").set_value(2)
    at.number_input(key="fit_batch_size").set_value(16).run()
    at.button(key="fit_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "loss" in at.success[0].value and str(tmp_path / "fitted") in at.success[0].value
    bars = at.get("progress")  # the bar ran to the end (streamlit keeps percent)
    assert [(p.value, p.proto.text) for p in bars] == [(100, "epoch 2/2")]
    fitted = load_model(tmp_path / "fitted")
    assert fitted.has_decoder and fitted.provenance["decoder_fitted"]["budget"]["epochs"] == 2
    # bad images are an error on the page, never a traceback
    at.text_input(key="fit_data").input("npz:/nowhere/images.npz").run()
    at.button(key="fit_go").click().run()
    assert not at.exception and "Could not fit a decoder" in at.error[0].value
