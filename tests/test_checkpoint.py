import json
from dataclasses import replace

import pytest
import torch

from mimmia_core.checkpoint import (META_FILE, WEIGHTS_FILE, CheckpointError, decoder_keys, load_model,
                                    load_own_checkpoint, model_from_weights, save_checkpoint)
from mimmia_core.masking import mask_noise
from mimmia_core.model import build_model


def test_own_format_round_trip(tiny_model, tmp_path):
    prov = {"trained_on": "demo", "epochs": 3, "members": [1, 2, 3]}
    save_checkpoint(tiny_model, tmp_path / "ck", provenance=prov)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == sorted([WEIGHTS_FILE, META_FILE])
    loaded = load_model(tmp_path / "ck")
    assert loaded.source_format == "mimmia" and loaded.has_decoder and loaded.missing_decoder_keys == []
    assert loaded.config == tiny_model.config
    assert loaded.provenance == prov
    a, b = tiny_model.state_dict(), loaded.model.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) and b[k].dtype == torch.float32 for k in a)
    assert loaded.fingerprint == load_own_checkpoint(tmp_path / "ck").fingerprint
    assert not loaded.model.training
    meta = json.loads((tmp_path / "ck" / META_FILE).read_text())
    assert meta["target_space"] == "pixels" and meta["storage_dtype"] == "float32"


def test_fingerprint_changes_with_the_weights(tiny_config, tiny_model):
    from mimmia_core.checkpoint import weights_fingerprint
    other = build_model(tiny_config, seed=1)
    assert weights_fingerprint(tiny_model) != weights_fingerprint(other)
    assert weights_fingerprint(tiny_model) == weights_fingerprint(build_model(tiny_config, seed=0))


def test_fp16_storage_loads_as_float32(tiny_model, tiny_images, tmp_path):
    save_checkpoint(tiny_model, tmp_path / "half", dtype=torch.float16)
    meta = json.loads((tmp_path / "half" / META_FILE).read_text())
    assert meta["storage_dtype"] == "float16"
    loaded = load_model(tmp_path / "half")
    for k, v in tiny_model.state_dict().items():
        got = loaded.model.state_dict()[k]
        assert got.dtype == torch.float32
        assert torch.equal(got, v.half().float())
    noise = mask_noise(0, range(6), 1, 16)[0]
    with torch.no_grad():
        x = tiny_model.normalize(tiny_images)
        torch.testing.assert_close(loaded.model(x, 0.75, noise)[1], tiny_model(x, 0.75, noise)[1],
                                   atol=5e-3, rtol=5e-3)


def test_truncated_safetensors_is_refused(tiny_model, tmp_path):
    save_checkpoint(tiny_model, tmp_path / "ck")
    weights = tmp_path / "ck" / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_model(tmp_path / "ck")
    weights.unlink()
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_model(tmp_path / "ck")


@pytest.mark.parametrize("meta", ["{ not json", json.dumps({"format": "mimmia"}),
                                  json.dumps({"config": {"img_size": 16, "depthh": 2}}),
                                  json.dumps({"config": {"img_size": 15, "patch_size": 4}}), json.dumps([1, 2])])
def test_corrupt_meta_is_refused(tiny_model, tmp_path, meta):
    save_checkpoint(tiny_model, tmp_path / "ck")
    (tmp_path / "ck" / META_FILE).write_text(meta)
    with pytest.raises(CheckpointError, match="not a readable mimmia config|these settings do not make an MAE"):
        load_model(tmp_path / "ck")


def test_weights_that_do_not_fit_the_config_are_refused(tiny_config, tiny_model, tmp_path):
    save_checkpoint(tiny_model, tmp_path / "ck")
    meta = json.loads((tmp_path / "ck" / META_FILE).read_text())
    meta["config"]["embed_dim"] = 64
    (tmp_path / "ck" / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"shape mismatch for blocks.0.attn.proj.bias: file \(32,\) vs "
                                              r"model \(64,\)"):
        load_model(tmp_path / "ck")
    deeper = build_model(replace(tiny_config, depth=2)).state_dict()
    with pytest.raises(CheckpointError, match=r"unknown weights \['blocks.1"):
        model_from_weights(tiny_config, deeper, "x")


def test_old_meta_without_layer_norm_eps_loads(tiny_model, tmp_path):
    save_checkpoint(tiny_model, tmp_path / "ck")
    meta = json.loads((tmp_path / "ck" / META_FILE).read_text())
    del meta["config"]["layer_norm_eps"]
    (tmp_path / "ck" / META_FILE).write_text(json.dumps(meta))
    assert load_model(tmp_path / "ck").config.layer_norm_eps == 1e-6


def test_missing_weights(tiny_model):
    sd = tiny_model.state_dict()
    enc_only = {k: v for k, v in sd.items() if k not in decoder_keys(sd)}
    fresh, missing = model_from_weights(tiny_model.config, enc_only, "enc")
    assert set(missing) == set(decoder_keys(sd)) and "decoder_pred.weight" in missing
    assert torch.equal(fresh.norm.weight, tiny_model.norm.weight)
    with pytest.raises(CheckpointError, match="missing decoder weights"):
        model_from_weights(tiny_model.config, enc_only, "enc", allow_missing_decoder=False)
    no_norm = {k: v for k, v in sd.items() if k != "norm.weight"}
    with pytest.raises(CheckpointError, match=r"missing encoder weights \['norm.weight'\]"):
        model_from_weights(tiny_model.config, no_norm, "x")
    half_decoder = {k: v for k, v in sd.items() if k != "decoder_norm.weight"}
    with pytest.raises(CheckpointError, match="the decoder is incomplete"):
        model_from_weights(tiny_model.config, half_decoder, "x")


def test_encoder_only_own_checkpoint_refuses_reconstruction(tiny_model, tmp_path):
    from safetensors.torch import save_file
    save_checkpoint(tiny_model, tmp_path / "ck")
    sd = tiny_model.state_dict()
    save_file({k: v.contiguous() for k, v in sd.items() if k not in decoder_keys(sd)},
              str(tmp_path / "ck" / WEIGHTS_FILE))
    loaded = load_model(tmp_path / "ck")
    assert not loaded.has_decoder
    with pytest.raises(CheckpointError, match="encoder-only.*missing: decoder_blocks.0"):
        loaded.require_decoder()


def test_load_model_dispatch_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such file or directory"):
        load_model(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither mimmia.json .* nor config.json"):
        load_model(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("not weights")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_model(tmp_path / "notes.txt")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="model_type is 'bert', not 'vit_mae'"):
        load_model(tmp_path / "other")


def test_save_replaces_a_checkpoint_as_a_whole_and_keeps_other_entries(tiny_config, tiny_model, tmp_path):
    ck = tmp_path / "ck"
    save_checkpoint(tiny_model, ck, provenance={"epochs": 1})
    (ck / "epochs" / "epoch-0001").mkdir(parents=True)
    (ck / "train_state.pt").write_bytes(b"state")
    other = build_model(tiny_config, seed=1)
    save_checkpoint(other, ck, provenance={"epochs": 2})
    loaded = load_model(ck)
    assert loaded.provenance == {"epochs": 2}
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in loaded.model.state_dict().items())
    assert (ck / "epochs" / "epoch-0001").is_dir() and (ck / "train_state.pt").read_bytes() == b"state"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temp folder left


def test_a_kill_during_save_leaves_the_old_checkpoint_whole(tiny_config, tiny_model, tmp_path, monkeypatch):
    import mimmia_core.checkpoint.own as ckmod
    ck = tmp_path / "ck"
    save_checkpoint(tiny_model, ck, provenance={"epochs": 1})
    real = ckmod.save_file

    def killed(state, path, metadata=None):  # the new weights are written, then the process dies
        real(state, path, metadata=metadata)
        raise KeyboardInterrupt
    monkeypatch.setattr(ckmod, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(build_model(tiny_config, seed=1), ck, provenance={"epochs": 2})
    loaded = load_model(ck)
    assert loaded.provenance == {"epochs": 1}
    assert all(torch.equal(v, tiny_model.state_dict()[k]) for k, v in loaded.model.state_dict().items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_an_interrupted_folder_swap_is_recovered(tiny_model, tmp_path):
    from mimmia_core.atomic import recover_dir
    ck = tmp_path / "ck"
    save_checkpoint(tiny_model, ck, provenance={"epochs": 1})
    (ck / "epochs").mkdir()
    # killed between moving the old folder aside and renaming the new one in: the old one comes back
    ck.rename(tmp_path / ".ck.abc.old")
    recover_dir(ck)
    assert load_model(ck).provenance == {"epochs": 1} and (ck / "epochs").is_dir()
    # killed after the new folder arrived, before the old one's other entries moved over
    aside = tmp_path / ".ck.def.old"
    aside.mkdir()
    (aside / "train_state.pt").write_bytes(b"state")
    (aside / META_FILE).write_text("old")
    save_checkpoint(tiny_model, ck, provenance={"epochs": 3})
    assert (ck / "train_state.pt").read_bytes() == b"state" and load_model(ck).provenance == {"epochs": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_a_folder_that_cannot_be_renamed_has_its_files_replaced_with_a_warning(tiny_config, tiny_model, tmp_path,
                                                                              monkeypatch):
    from mimmia_core import atomic
    ck = tmp_path / "mounted"
    save_checkpoint(tiny_model, ck, provenance={"epochs": 1})
    (ck / "epochs").mkdir()
    monkeypatch.setattr(atomic.os.path, "ismount", lambda p: str(p) == str(ck))
    with pytest.warns(atomic.WriteWarning, match="cannot be replaced as a whole .* replaced one by one"):
        save_checkpoint(build_model(tiny_config, seed=1), ck, provenance={"epochs": 2})
    assert load_model(ck).provenance == {"epochs": 2}
    assert sorted(p.name for p in ck.iterdir()) == sorted([WEIGHTS_FILE, META_FILE, "epochs"])
