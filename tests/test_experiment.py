import json
import shutil

import numpy as np
import pytest
import torch

from mimmia_core.checkpoint import DECODER_PREFIXES, LoadedModel
from mimmia_core.experiment import load_demo_experiment, load_experiment
from mimmia_core.attacks import ATTACKS, run_attack, sweep
from mimmia_core.cache import ScoreCache
from mimmia_core.image_score import score_image
from mimmia_core.manifest import CANDIDATE_SETS, SplitManifest
from mimmia_core.plan import missing_scores
from mimmia_core.scorer import Scorer
from mimmia_core.scores import ScoreSpec
from mimmia_core.model import build_model

@pytest.fixture(scope="module")
def tiny(tmp_path_factory, experiment_writer):
    return experiment_writer(tmp_path_factory.mktemp("tiny"))


def test_load_experiment_from_a_manifest(tiny):
    exp = load_experiment(tiny["target"], tiny["shadow"], tiny["refs"], manifest=tiny["manifest"], device="cpu")
    manifest = SplitManifest.load(tiny["manifest"])
    assert exp.name == "target" and len(exp.references) == 2
    assert exp.members.ids.tolist() == manifest.target_members
    assert exp.shadow_nonmembers.ids.tolist() == manifest.shadow_nonmembers
    d = exp.describe()
    assert json.loads(json.dumps(d)) == d
    assert d["target"]["fingerprint"] == exp.target.fingerprint != d["shadow"]["fingerprint"]
    assert d["data"]["target_members"]["size"] == 6 and d["data"]["shadow_nonmembers"]["size"] == 6
    assert d["manifest"]["source"] == f"npz:{tiny['data']}" and d["manifest"]["reference_sets"] == 2
    assert d["notes"] == []
    manifest.reference_members[1].append(manifest.shadow_nonmembers[0])
    exp = load_experiment(tiny["target"], tiny["shadow"], tiny["refs"], manifest=manifest, device="cpu")
    assert "reference set(s) [1] overlap the shadow's images" in exp.notes[0]


def test_explicit_sources_override_the_manifest(tiny, tmp_path):
    other = tmp_path / "other.npz"
    np.savez(other, images=np.zeros((3, 8, 8, 1), np.uint8))
    exp = load_experiment(tiny["target"], members=f"npz:{other}", nonmembers=f"npz:{tiny['data']}", device="cpu")
    assert len(exp.members) == 3 and len(exp.nonmembers) == 40 and exp.shadow is None
    exp = load_experiment(tiny["target"], manifest=tiny["manifest"], members=f"npz:{other}", device="cpu")
    assert len(exp.members) == 3 and len(exp.nonmembers) == 6


def test_load_experiment_refuses_bad_input(tiny, tmp_path):
    with pytest.raises(ValueError, match="needs target members and non-members"):
        load_experiment(tiny["target"], device="cpu")
    changed = tmp_path / "changed.npz"
    with np.load(tiny["data"]) as z:
        images = z["images"].copy()
        images[0] ^= 1
        np.savez(changed, images=images, ids=z["ids"])
    with pytest.raises(ValueError, match="the data changed"):
        load_experiment(tiny["target"], manifest=tiny["manifest"], data=f"npz:{changed}", device="cpu")
    with pytest.raises(ValueError, match="no such file"):
        load_experiment(tmp_path / "missing", manifest=tiny["manifest"], device="cpu")


def test_encoder_only_target_borrows_the_shadow_decoder(tiny):
    full = load_experiment(tiny["target"], tiny["shadow"], manifest=tiny["manifest"], device="cpu")
    missing = [k for k in full.target.model.state_dict() if k.startswith(DECODER_PREFIXES)]
    encoder_only = LoadedModel(full.target.model, "encoder.pth", "official_mae", {}, missing)
    exp = load_experiment(encoder_only, full.shadow, manifest=tiny["manifest"], decoder_from="shadow", device="cpu")
    assert exp.target.has_decoder and "encoder-only" in exp.notes[0]
    sd, shadow_sd = exp.target.model.state_dict(), full.shadow.model.state_dict()
    assert torch.equal(sd["decoder_pred.weight"], shadow_sd["decoder_pred.weight"])
    assert torch.equal(sd["blocks.0.attn.qkv.weight"], full.target.model.state_dict()["blocks.0.attn.qkv.weight"])


def test_demo_experiment_layout(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="build-demo"):
        load_demo_experiment(device="cpu", demo_dir=tmp_path / "nowhere")
    demo = tmp_path / "demo"
    shutil.copytree(tiny["target"].parent, demo / "models")
    shutil.copy(tiny["data"], demo / "fashion_mnist_subset.npz")
    shutil.copy(tiny["manifest"], demo / "manifest.json")
    exp = load_demo_experiment(device="cpu", demo_dir=demo)
    assert exp.name == "demo" and [r.path.rsplit("/", 1)[1] for r in exp.references] == ["ref-0", "ref-1"]
    assert len(exp.shadow_members) == 6


def test_assumed_settings_become_notes_and_report_fields(tiny, tiny_config, tmp_path):
    torch.save({"model": build_model(tiny_config, seed=0).state_dict()}, tmp_path / "off.pth")
    target = {"path": str(tmp_path / "off.pth"),
              "config": dict(num_heads=2, decoder_num_heads=2, mean=[0.5], std=[0.5], norm_pix_loss=False)}
    exp = load_experiment(target, tiny["shadow"], manifest=tiny["manifest"], device="cpu")
    assert exp.target.provenance["settings_given"]["mean"] == [0.5]
    assert [n for n in exp.notes if "assumed" in n] == [
        f"target {tmp_path / 'off.pth'}: assumed, not read from the file: layer_norm_eps (MAE's own code (and "
        f"timm's ViT) use LayerNorm eps 1e-06)"]
    assert exp.describe()["target"]["settings_assumed"] == {
        "layer_norm_eps": "MAE's own code (and timm's ViT) use LayerNorm eps 1e-06"}


def test_the_core_decides_what_the_app_and_cli_show(tiny, tmp_path):
    """fingerprint, available attacks, the scores a sweep still needs, and an upload's score."""
    exp = load_experiment(tiny["target"], tiny["shadow"], tiny["refs"], manifest=tiny["manifest"], device="cpu")
    again = load_experiment(tiny["target"], tiny["shadow"], tiny["refs"], manifest=tiny["manifest"], device="cpu")
    fewer = load_experiment(tiny["target"], tiny["shadow"], tiny["refs"][:1], manifest=tiny["manifest"], device="cpu")
    assert exp.fingerprint() == again.fingerprint() != fewer.fingerprint()
    assert list(exp.sources()) == list(CANDIDATE_SETS) and list(exp.models())[2:] == ["reference_0", "reference_1"]
    assert exp.available_attacks() == [a for a in ATTACKS if not ATTACKS[a].online]  # offline references
    assert fewer.available_attacks() == ["paper", "calibrated", "rmia", "encodermi", "unmasked"]
    assert exp.available_attacks(varying_mask_ratio=True) == ["paper", "calibrated", "lira", "rmia"]

    scorer, spec = Scorer(cache=ScoreCache(tmp_path / "cache")), ScoreSpec(0.5, 2, 0, "masked_mse")
    todo = missing_scores(exp, scorer, [0.25, 0.5], ["paper", "calibrated"], spec)
    assert len(todo) == 2 * (4 + 2 * 4) and todo.image_masks == 2 * 2 * (4 * 6 + 2 * 4 * 6)
    sweep(exp, [0.25], ["paper", "calibrated"], spec, scorer)
    assert len(missing_scores(exp, scorer, [0.25, 0.5], ["paper", "calibrated"], spec)) == 12
    assert not missing_scores(exp, scorer, [0.25], ["paper", "lira"], spec)

    result = run_attack("calibrated", exp, spec, scorer)
    image = exp.members.images(np.arange(1))[0]
    assert score_image(exp, result, image, int(exp.members.ids[0]), scorer) == pytest.approx(result.member_scores[0])
    with pytest.raises(ValueError, match="8x8|size"):
        score_image(exp, result, np.zeros((9, 9, 1), np.uint8), 1, scorer)
