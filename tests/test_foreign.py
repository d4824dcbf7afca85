"""Foreign checkpoints reproduce transformers' ViTMAE exactly, and bad files are refused."""
import argparse
import json
import os
import pickle
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mimmia_core.checkpoint import CheckpointError, MissingSettingsError, decoder_keys, load_model, save_checkpoint
from mimmia_core.checkpoint import (attach_decoder, describe_checkpoint, infer_official_config, load_hf_vitmae,
                                 load_official_mae, official_settings, timm_num_heads)
from mimmia_core.config import PRESETS, MAEConfig
from mimmia_core.masking import mask_noise
from mimmia_core.model import build_model

transformers = pytest.importorskip("transformers")

HF_ARCH = dict(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
               num_attention_heads=4, intermediate_size=64, decoder_hidden_size=24, decoder_num_hidden_layers=1,
               decoder_num_attention_heads=3, decoder_intermediate_size=48)
HEADS = {"num_heads": 4, "decoder_num_heads": 3}  # not readable from weights of these widths
HEADLESS = MAEConfig(img_size=16, patch_size=4, in_chans=1, embed_dim=48, depth=2, num_heads=6, decoder_embed_dim=40,
                     decoder_depth=1, decoder_num_heads=5, mean=(0.0,), std=(1.0,))
PRESETS_HUGE = PRESETS["mae_vit_huge_patch14"].to_dict()


def make_hf(norm_pix_loss=False, layer_norm_eps=1e-12, seed=0, **config):
    torch.manual_seed(seed)
    config = transformers.ViTMAEConfig(**{**HF_ARCH, **config}, norm_pix_loss=norm_pix_loss,
                                       layer_norm_eps=layer_norm_eps)
    model = transformers.ViTMAEForPreTraining(config).eval()
    with torch.no_grad():  # every bias and norm non-trivial, so a wrong mapping shows
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def hf():
    return make_hf()


def assert_same_as_hf(loaded, hf_model, n=5):
    x = torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    noise = mask_noise(0, range(n), 1, 16)[0]
    with torch.no_grad():
        out = hf_model(pixel_values=x, noise=noise)
        loss, pred, mask = loaded.require_decoder()(x, hf_model.config.mask_ratio, noise)
    assert torch.equal(mask, out.mask)
    torch.testing.assert_close(pred, out.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, out.loss, rtol=1e-5, atol=1e-6)


def to_4x_names(sd):
    """transformers 5.x in-memory names -> 4.x names (vit.encoder.layer.N.attention.attention.query ...)."""
    renames = [("attention.q_proj", "attention.attention.query"), ("attention.k_proj", "attention.attention.key"),
               ("attention.v_proj", "attention.attention.value"), ("attention.o_proj", "attention.output.dense"),
               ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense")]
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^vit\.layers\.", "vit.encoder.layer.", k)
        for new, old in renames:
            k = k.replace(new, old)
        out[k] = v
    return out


def to_official(hf_sd):
    """transformers 5.x names -> facebookresearch/mae names, written independently of foreign.py."""
    sd = {"cls_token": hf_sd["vit.embeddings.cls_token"], "pos_embed": hf_sd["vit.embeddings.position_embeddings"],
          "patch_embed.proj.weight": hf_sd["vit.embeddings.patch_embeddings.projection.weight"],
          "patch_embed.proj.bias": hf_sd["vit.embeddings.patch_embeddings.projection.bias"],
          "norm.weight": hf_sd["vit.layernorm.weight"], "norm.bias": hf_sd["vit.layernorm.bias"]}
    for k, v in hf_sd.items():
        if k.startswith("decoder.") and ".decoder_layers." not in k:
            sd[k[len("decoder."):]] = v
    for src, dst in (("vit.layers", "blocks"), ("decoder.decoder_layers", "decoder_blocks")):
        n = len({k.split(".")[2] for k in hf_sd if k.startswith(src + ".")})
        for i in range(n):
            a, b = f"{src}.{i}.", f"{dst}.{i}."
            for t in ("weight", "bias"):
                sd[b + "attn.qkv." + t] = torch.cat([hf_sd[a + f"attention.{p}_proj.{t}"] for p in "qkv"])
                sd[b + "attn.proj." + t] = hf_sd[a + "attention.o_proj." + t]
                sd[b + "norm1." + t] = hf_sd[a + "layernorm_before." + t]
                sd[b + "norm2." + t] = hf_sd[a + "layernorm_after." + t]
                sd[b + "mlp.fc1." + t] = hf_sd[a + "mlp.fc1." + t]
                sd[b + "mlp.fc2." + t] = hf_sd[a + "mlp.fc2." + t]
    return sd


IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}


def write_preprocessor(path, **p):
    (path / "preprocessor_config.json").write_text(json.dumps(p or IMAGENET))


def write_hf_dir(path, hf_model, sd, weights_file="model.safetensors"):
    path.mkdir()
    hf_model.config.to_json_file(str(path / "config.json"))
    write_preprocessor(path)
    if weights_file.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path / weights_file))
    else:
        torch.save(sd, path / weights_file)
    return path


# ---- (a) Hugging Face ViTMAE -----------------------------------------------
def test_hf_save_pretrained_matches_transformers(hf, tmp_path):
    hf.save_pretrained(tmp_path / "hf")
    with pytest.raises(MissingSettingsError, match=r"cannot tell mean, std .*no preprocessor_config.json.*"
                                                   r"hf\?mean=M .*&std=S"):
        load_model(tmp_path / "hf")
    write_preprocessor(tmp_path / "hf")
    loaded = load_model(tmp_path / "hf")
    assert loaded.source_format == "hf_vitmae" and loaded.has_decoder
    c = loaded.config
    assert (c.img_size, c.patch_size, c.in_chans, c.embed_dim, c.depth, c.num_heads) == (16, 4, 3, 32, 2, 4)
    assert (c.decoder_embed_dim, c.decoder_depth, c.decoder_num_heads, c.mlp_ratio) == (24, 1, 3, 2.0)
    # transformers writes LayerNorm eps 1e-12, and every LayerNorm gets it
    assert c.layer_norm_eps == 1e-12
    assert {m.eps for m in loaded.model.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-12}
    assert c.mean == (0.485, 0.456, 0.406) and not c.norm_pix_loss
    assert "settings_assumed" not in loaded.provenance  # save_pretrained writes every field
    assert_same_as_hf(loaded, hf)
    info = describe_checkpoint(loaded)
    count = {part: sum(p.numel() for n, p in hf.named_parameters() if n.startswith(prefix))
             for part, prefix in (("encoder", "vit."), ("decoder", "decoder."))}
    assert info["parameters"] == count
    assert info["has_decoder"] and info["target_space"] == "pixels" and info["num_patches"] == 16
    assert info["fingerprint"] == loaded.fingerprint and info["architecture"]["layer_norm_eps"] == 1e-12
    json.dumps(info)


@pytest.mark.parametrize("names, weights_file", [("5.x", "model.safetensors"), ("4.x", "model.safetensors"),
                                                 ("4.x", "pytorch_model.bin")])
def test_hf_key_names_of_both_major_versions(hf, tmp_path, names, weights_file):
    sd = hf.state_dict()
    assert any(".q_proj." in k for k in sd)  # transformers 5.x in memory
    if names == "4.x":
        sd = to_4x_names(sd)
        assert "vit.encoder.layer.1.attention.attention.query.weight" in sd
        assert "decoder.decoder_layers.0.intermediate.dense.bias" in sd
    loaded = load_hf_vitmae(write_hf_dir(tmp_path / "hf", hf, sd, weights_file))
    assert loaded.provenance["key_names"] == f"transformers {names}"
    assert_same_as_hf(loaded, hf)


def test_hf_norm_pix_loss_eps_and_preprocessing(tmp_path):
    # a large eps: ignoring the file's eps would change the logits far beyond the tolerance
    hf = make_hf(norm_pix_loss=True, layer_norm_eps=1e-2, seed=3)
    hf.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3]}))
    loaded = load_hf_vitmae(tmp_path / "hf")
    assert loaded.config.norm_pix_loss and loaded.config.target_space == "normalized_patches"
    assert loaded.config.layer_norm_eps == 1e-2
    assert loaded.config.mean == (0.5, 0.4, 0.3) and loaded.config.std == (0.2, 0.25, 0.3)
    assert_same_as_hf(loaded, hf)
    # the same weights with the official eps give other logits: the file's eps is what matched
    wrong = build_model(replace(loaded.config, layer_norm_eps=1e-6))
    wrong.load_state_dict(loaded.model.state_dict())
    x, noise = torch.randn(2, 3, 16, 16), mask_noise(0, range(2), 1, 16)[0]
    with torch.no_grad():
        assert (wrong(x, 0.75, noise)[1] - hf(pixel_values=x, noise=noise).logits).abs().max() > 1e-4


def test_hf_sharded_without_qkv_bias(tmp_path):
    hf = make_hf(seed=4, qkv_bias=False)
    hf.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    write_preprocessor(tmp_path / "hf")
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists()
    loaded = load_hf_vitmae(tmp_path / "hf")
    assert not loaded.model.blocks[0].attn.qkv.bias.any()
    assert_same_as_hf(loaded, hf)


def test_hf_encoder_only_and_bad_directories(hf, tmp_path):
    enc = {k[len("vit."):]: v for k, v in hf.state_dict().items() if k.startswith("vit.")}  # a ViTMAEModel
    loaded = load_hf_vitmae(write_hf_dir(tmp_path / "enc", hf, enc))
    assert not loaded.has_decoder
    with pytest.raises(CheckpointError, match="encoder-only.*decoder_blocks.0"):
        loaded.require_decoder()

    bad = write_hf_dir(tmp_path / "bad", hf, {**hf.state_dict(), "vit.pooler.dense.weight": torch.zeros(2, 2)})
    with pytest.raises(CheckpointError, match=r"unknown ViTMAE weights \['vit.pooler.dense.weight'\]"):
        load_hf_vitmae(bad)
    cfg = json.loads((bad / "config.json").read_text())
    shutil.rmtree(bad)
    write_hf_dir(bad, hf, hf.state_dict())
    (bad / "config.json").write_text(json.dumps({**cfg, "hidden_size": 64, "intermediate_size": 128}))
    with pytest.raises(CheckpointError, match="shape mismatch for"):
        load_hf_vitmae(bad)
    (bad / "config.json").write_text(json.dumps({**cfg, "hidden_act": "relu"}))
    with pytest.raises(CheckpointError, match="hidden_act 'relu' is not supported"):
        load_hf_vitmae(bad)
    (bad / "config.json").write_text("{ truncated")
    with pytest.raises(CheckpointError, match="not readable JSON"):
        load_hf_vitmae(bad)
    (bad / "config.json").write_text(json.dumps(cfg))
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_hf_vitmae(bad)
    (bad / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_hf_vitmae(bad)


# ---- (b) official facebookresearch/mae layout ------------------------------
def test_official_training_checkpoint_matches_transformers(hf, tmp_path):
    sd = to_official(hf.state_dict())
    args = argparse.Namespace(model="mae_custom", mask_ratio=0.75, norm_pix_loss=False, input_size=16, lr=None)
    torch.save({"model": sd, "optimizer": {"state": {}, "param_groups": []}, "epoch": 41, "args": args},
               tmp_path / "checkpoint-41.pth")
    loaded = load_model(tmp_path / "checkpoint-41.pth", config={**HEADS, "layer_norm_eps": 1e-12})
    assert loaded.source_format == "official_mae" and loaded.has_decoder
    assert loaded.provenance["args"] == {"model": "mae_custom", "mask_ratio": 0.75, "norm_pix_loss": False,
                                         "input_size": 16, "epoch": 41}
    assert loaded.provenance["settings_given"] == {**HEADS, "layer_norm_eps": 1e-12}
    # norm_pix_loss came from the args; RGB mean/std are MAE's ImageNet constants, and say so
    assert set(loaded.provenance["settings_assumed"]) == {"mean", "std"}
    assert_same_as_hf(loaded, hf)
    # the same through the PATH?key=value syntax of the model flags
    same = load_model(f"{tmp_path / 'checkpoint-41.pth'}?num_heads=4&decoder_num_heads=3&layer_norm_eps=1e-12")
    assert same.fingerprint == loaded.fingerprint
    arch = infer_official_config(sd)
    assert arch == dict(img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=2, decoder_embed_dim=24,
                        decoder_depth=1, mlp_ratio=2.0)
    with pytest.raises(MissingSettingsError, match=r"cannot tell num_heads, decoder_num_heads .*no official shape.*"
                                                   r"checkpoint-41.pth\?num_heads=N&decoder_num_heads=N"):
        load_official_mae(tmp_path / "checkpoint-41.pth")


def test_official_norm_pix_loss_bare_dict_and_module_prefix(tmp_path):
    hf = make_hf(norm_pix_loss=True, seed=5)
    sd = {"module." + k: v for k, v in to_official(hf.state_dict()).items()}
    torch.save(sd, tmp_path / "mae_pretrain_vit_tiny_full.pth")
    settings = {**HEADS, "layer_norm_eps": 1e-12}
    # no args, and no official release of this shape: the target space is not guessed from the name
    with pytest.raises(MissingSettingsError, match=r"cannot tell norm_pix_loss .*norm_pix_loss=true\|false"):
        load_official_mae(tmp_path / "mae_pretrain_vit_tiny_full.pth", config=settings)
    loaded = load_official_mae(tmp_path / "mae_pretrain_vit_tiny_full.pth", config={**settings, "norm_pix_loss": True})
    assert loaded.config.norm_pix_loss
    assert_same_as_hf(loaded, hf)


def _meta(shape):
    return torch.empty(shape, device="meta")


def official_shapes(width, depth, patch, grid, decoder=(512, 8)):
    sd = {"patch_embed.proj.weight": _meta((width, 3, patch, patch)), "pos_embed": _meta((1, grid * grid + 1, width)),
          "decoder_embed.weight": _meta((decoder[0], width))}
    for i in range(depth):
        sd[f"blocks.{i}.mlp.fc1.weight"] = _meta((4 * width, width))
    for i in range(decoder[1]):
        sd[f"decoder_blocks.{i}.mlp.fc1.weight"] = _meta((4 * decoder[0], decoder[0]))
    return sd


@pytest.mark.parametrize("width, depth, patch, grid, heads, release", [
    (768, 12, 16, 14, 12, "mae_visualize_vit_base.pth"), (1024, 24, 16, 14, 16, "mae_visualize_vit_large.pth"),
    (1280, 32, 14, 16, 16, "mae_pretrain_vit_huge_full.pth")])
def test_official_shapes_define_heads_preprocessing_and_release_target_space(width, depth, patch, grid, heads,
                                                                              release):
    arch = infer_official_config(official_shapes(width, depth, patch, grid))
    assert (arch["embed_dim"], arch["depth"], arch["patch_size"], arch["img_size"]) == (width, depth, patch, 224)
    fields, assumed = official_settings(arch, release, {}, {})
    assert (fields["num_heads"], fields["decoder_num_heads"]) == (heads, 16)
    assert fields["mean"] == (0.485, 0.456, 0.406) and fields["layer_norm_eps"] == 1e-6
    assert fields["norm_pix_loss"] == release.endswith("_full.pth")
    assert set(assumed) == {"num_heads", "decoder_num_heads", "mean", "std", "norm_pix_loss", "layer_norm_eps"}
    # a release name on weights of another size says nothing
    other = infer_official_config(official_shapes(768 if width != 768 else 1024, 12, 16, 14))
    with pytest.raises(MissingSettingsError, match="cannot tell .*norm_pix_loss"):
        official_settings(other, release, {"num_heads": 12}, {})


@pytest.mark.parametrize("shapes, given, missing", [
    (dict(width=128, depth=2, patch=4, grid=7, decoder=(128, 2)), {},
     ["num_heads", "decoder_num_heads", "norm_pix_loss"]),
    (dict(width=768, depth=12, patch=16, grid=14, decoder=(128, 2)), {"norm_pix_loss": False},
     ["decoder_num_heads"]),
    (dict(width=768, depth=6, patch=16, grid=14), {"norm_pix_loss": False}, ["num_heads"]),
    (dict(width=768, depth=12, patch=16, grid=14), {"norm_pix_loss": False, "mean": (0.5,) * 3}, ["std"]),
])
def test_settings_no_format_defines_are_refused_by_name(shapes, given, missing):
    arch = infer_official_config(official_shapes(**shapes))
    with pytest.raises(MissingSettingsError) as e:
        official_settings(arch, "off.pth", given, {})
    assert list(e.value.missing) == missing
    assert f"off.pth?{missing[0]}=" in str(e.value) and "--target" in str(e.value)


def test_grayscale_official_file_needs_its_preprocessing():
    sd = official_shapes(768, 12, 16, 14)
    sd["patch_embed.proj.weight"] = _meta((768, 1, 16, 16))
    arch = infer_official_config(sd)
    with pytest.raises(MissingSettingsError, match="cannot tell mean, std .*1-channel") as e:
        official_settings(arch, "gray.pth", {"norm_pix_loss": False}, {})
    assert list(e.value.missing) == ["mean", "std"]
    fields, assumed = official_settings(arch, "gray.pth", {"norm_pix_loss": False, "mean": (0.0,), "std": (1.0,)}, {})
    assert fields["mean"] == (0.0,) and "mean" not in assumed and fields["num_heads"] == 12


# ---- (c) encoder-only files and attach_decoder -----------------------------
def test_encoder_only_official_file_and_attach_decoder(tiny_model, tiny_images, tmp_path):
    sd = tiny_model.state_dict()
    torch.save({"model": {k: v for k, v in sd.items() if k not in decoder_keys(sd)}},
               tmp_path / "mae_pretrain_vit_tiny.pth")
    encoder = load_official_mae(tmp_path / "mae_pretrain_vit_tiny.pth", config=tiny_model.config)
    assert not encoder.has_decoder
    assert set(encoder.missing_decoder_keys) == set(decoder_keys(sd))
    # the random placeholder decoder is not part of the fingerprint
    again = load_official_mae(tmp_path / "mae_pretrain_vit_tiny.pth", config=tiny_model.config)
    assert again.fingerprint == encoder.fingerprint
    with pytest.raises(CheckpointError, match="encoder-only.*decoder_blocks.0.attn.proj.bias"):
        encoder.require_decoder()
    info = describe_checkpoint(encoder)
    assert info["has_decoder"] is False and info["parameters"]["decoder"] == 0
    assert "decoder_pred.weight" in info["missing_decoder_keys"]

    save_checkpoint(tiny_model, tmp_path / "shadow")
    shadow = load_model(tmp_path / "shadow")
    combined = attach_decoder(encoder, shadow)
    assert combined.has_decoder and combined.source_format == "attached"
    assert combined.provenance["decoder"]["fingerprint"] == shadow.fingerprint
    assert combined.fingerprint == shadow.fingerprint  # encoder and decoder came from the same weights
    noise = mask_noise(0, range(6), 1, 16)[0]
    with torch.no_grad():
        x = tiny_model.normalize(tiny_images)
        torch.testing.assert_close(combined.require_decoder()(x, 0.75, noise)[1], tiny_model(x, 0.75, noise)[1])
    json.dumps(describe_checkpoint(combined))

    wider = build_model(replace(tiny_model.config, embed_dim=64, num_heads=4))
    save_checkpoint(wider, tmp_path / "wider")
    with pytest.raises(CheckpointError, match="differ in embed_dim: encoder 32 vs decoder's model 64"):
        attach_decoder(encoder, load_model(tmp_path / "wider"))
    with pytest.raises(CheckpointError, match="encoder-only"):
        attach_decoder(shadow, encoder)


def test_timm_architecture_names_give_heads():
    assert timm_num_heads("vit_base_patch16_224") == 12
    assert timm_num_heads("vit_small_patch16_224") == 6
    assert timm_num_heads("no_such_architecture") is None


def test_timm_vit_weights(tmp_path):
    from timm.models.vision_transformer import VisionTransformer
    vit = VisionTransformer(img_size=16, patch_size=4, embed_dim=64, depth=2, num_heads=1, num_classes=0)
    (tmp_path / "timm").mkdir()
    save_file(vit.state_dict(), str(tmp_path / "timm" / "model.safetensors"))
    (tmp_path / "timm" / "config.json").write_text(json.dumps({
        "architecture": "vit_test_patch4", "num_classes": 0, "global_pool": "token",
        "pretrained_cfg": {"tag": "mae", "mean": [0.4, 0.4, 0.4], "std": [0.3, 0.3, 0.3]}}))
    with pytest.raises(MissingSettingsError, match="cannot tell num_heads"):
        load_model(tmp_path / "timm")  # timm knows no architecture of that name
    loaded = load_model(f"{tmp_path / 'timm'}?num_heads=1")
    assert loaded.source_format == "timm" and not loaded.has_decoder
    assert loaded.config.mean == (0.4, 0.4, 0.4) and loaded.config.num_heads == 1
    ours = loaded.model.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in vit.state_dict().items())
    single = load_model(tmp_path / "timm" / "model.safetensors", config={"num_heads": 1, "mean": (0.4,) * 3,
                                                                        "std": (0.3,) * 3})  # the weights alone
    assert single.source_format == "official_mae" and single.fingerprint == loaded.fingerprint

    classifier = VisionTransformer(img_size=16, patch_size=4, embed_dim=64, depth=1, num_heads=1, num_classes=10)
    torch.save(classifier.state_dict(), tmp_path / "finetuned.pth")
    with pytest.raises(CheckpointError, match="fine-tuned classifier, not an MAE"):
        load_model(tmp_path / "finetuned.pth")


# ---- (d) bad files -----------------------------------------------------------
class RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class OpensFile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_malicious_pickles_run_nothing(tiny_model, tmp_path):
    marker = tmp_path / "pwned"
    sd = tiny_model.state_dict()
    payloads = {
        "in_model.pth": lambda p: torch.save({"model": {**sd, "evil": RunsShell(marker)}}, p),
        "in_args.pth": lambda p: torch.save({"model": sd, "args": argparse.Namespace(x=OpensFile(marker))}, p),
        "top.pth": lambda p: torch.save(RunsShell(marker), p),
        "plain_pickle.pth": lambda p: p.write_bytes(pickle.dumps({"model": OpensFile(marker)}, protocol=2)),
    }
    for name, write in payloads.items():
        write(tmp_path / name)
        with pytest.raises(CheckpointError, match="refused to unpickle.*GLOBAL.*nothing from the file was executed"):
            load_model(tmp_path / name)
        assert not marker.exists(), name
    # the payload is real: an unsafe load would have run it
    pickle.loads((tmp_path / "plain_pickle.pth").read_bytes())["model"].close()
    assert marker.exists()


def test_bad_official_files(tiny_model, tmp_path):
    sd = tiny_model.state_dict()
    good = tmp_path / "good.pth"
    torch.save({"model": sd}, good)
    data = good.read_bytes()
    cases = {
        "truncated.pth": (data[:len(data) // 2], "not a readable PyTorch checkpoint, or a truncated one"),
        "empty.pth": (b"", "not a readable PyTorch checkpoint, or a truncated one"),
        "text.pth": (b"these are not weights\n", "not a readable PyTorch checkpoint"),
        "image.pth": (b"\x89PNG\r\n\x1a\n" + bytes(64), "not a readable PyTorch checkpoint"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=re.escape(message)):
            load_official_mae(tmp_path / name, config=tiny_model.config)

    def refused(obj, message, **kw):
        torch.save(obj, tmp_path / "x.pth")
        with pytest.raises(ValueError, match=message):
            load_official_mae(tmp_path / "x.pth", **kw)

    cfg = {"config": tiny_model.config}
    refused({**sd, "blocks.0.attn.extra": torch.zeros(3)}, r"unknown weights \['blocks.0.attn.extra'\]", **cfg)
    refused({**sd, "decoder_pred.weight": torch.zeros(5, 24)}, r"shape mismatch for decoder_pred.weight", **cfg)
    refused({k: v for k, v in sd.items() if k != "decoder_norm.weight"}, "the decoder is incomplete", **cfg)
    refused([1, 2, 3], "expected a state dict")
    refused({"epoch": 3, "note": "hi"}, "neither {'model': state_dict} nor a bare state dict")
    refused({"weight": torch.zeros(2)}, "not an MAE/ViT state dict with official key names")
    refused({"model": sd}, "do not make an MAE.*not divisible by its 5 heads", config={**cfg["config"].to_dict(), "num_heads": 5})
    refused({"model": sd}, r"unknown setting\(s\) \['depthh'\]", config={"depthh": 5})
    with pytest.raises(CheckpointError, match="no such file"):
        load_official_mae(tmp_path / "missing.pth")


# ---- (e) a grayscale official-layout file trained elsewhere ----------------
def independent_masked_errors(sd, imgs, noise, mask_ratio, heads, decoder_heads, patch):
    """Per-image MSE over the masked patches, written from MAE's paper steps with torch.nn.functional only
    (no mimmia, no timm): imgs (N, C, H, W) as the trainer fed them, noise (N, L)."""
    F = torch.nn.functional

    def block(x, pre, h):
        n, t, d = x.shape
        y = F.layer_norm(x, (d,), sd[pre + "norm1.weight"], sd[pre + "norm1.bias"], eps=1e-6)
        q, k, v = F.linear(y, sd[pre + "attn.qkv.weight"], sd[pre + "attn.qkv.bias"]).view(n, t, 3, h, d // h) \
            .permute(2, 0, 3, 1, 4)
        a = ((q @ k.transpose(-1, -2)) * (d // h) ** -0.5).softmax(-1) @ v
        x = x + F.linear(a.transpose(1, 2).reshape(n, t, d), sd[pre + "attn.proj.weight"], sd[pre + "attn.proj.bias"])
        y = F.layer_norm(x, (d,), sd[pre + "norm2.weight"], sd[pre + "norm2.bias"], eps=1e-6)
        y = F.linear(F.gelu(F.linear(y, sd[pre + "mlp.fc1.weight"], sd[pre + "mlp.fc1.bias"])),
                     sd[pre + "mlp.fc2.weight"], sd[pre + "mlp.fc2.bias"])
        return x + y

    n, c, size, _ = imgs.shape
    x = F.conv2d(imgs, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch)
    x = x.flatten(2).transpose(1, 2) + sd["pos_embed"][:, 1:]
    length, keep = x.shape[1], int(x.shape[1] * (1 - mask_ratio))
    shuffle = noise.argsort(dim=1)
    restore = shuffle.argsort(dim=1)
    x = torch.gather(x, 1, shuffle[:, :keep, None].expand(-1, -1, x.shape[2]))
    x = torch.cat([(sd["cls_token"] + sd["pos_embed"][:, :1]).expand(n, -1, -1), x], dim=1)
    for i in range(len({k.split(".")[1] for k in sd if k.startswith("blocks.")})):
        x = block(x, f"blocks.{i}.", heads)
    x = F.layer_norm(x, (x.shape[2],), sd["norm.weight"], sd["norm.bias"], eps=1e-6)
    x = F.linear(x, sd["decoder_embed.weight"], sd["decoder_embed.bias"])
    rest = torch.cat([x[:, 1:], sd["mask_token"].expand(n, length - keep, -1)], dim=1)
    x = torch.cat([x[:, :1], torch.gather(rest, 1, restore[..., None].expand(-1, -1, x.shape[2]))], dim=1)
    x = x + sd["decoder_pos_embed"]
    for i in range(len({k.split(".")[1] for k in sd if k.startswith("decoder_blocks.")})):
        x = block(x, f"decoder_blocks.{i}.", decoder_heads)
    x = F.layer_norm(x, (x.shape[2],), sd["decoder_norm.weight"], sd["decoder_norm.bias"], eps=1e-6)
    pred = F.linear(x, sd["decoder_pred.weight"], sd["decoder_pred.bias"])[:, 1:]
    g = size // patch
    target = imgs.reshape(n, c, g, patch, g, patch).permute(0, 2, 4, 3, 5, 1).reshape(n, g * g, -1)
    mask = torch.ones(n, length)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, restore)
    return (((pred - target) ** 2).mean(-1) * mask).sum(1) / mask.sum(1)


def test_foreign_grayscale_file_is_refused_then_reproduces_its_trainer(tmp_path):
    from mimmia_core.data import ArraySource
    from mimmia_core.scores import ScoreSpec, score_images
    gen = torch.Generator().manual_seed(7)
    width, dec_width, patch, size = 48, 40, 4, 16  # no official shape: every head count is unknowable
    model = build_model(replace(HEADLESS, embed_dim=width, num_heads=6, decoder_embed_dim=dec_width,
                                decoder_num_heads=5), seed=3)
    sd = {k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in model.state_dict().items()}
    torch.save({"model": sd}, tmp_path / "off.pth")  # no args: nothing but weights

    with pytest.raises(MissingSettingsError) as refused:
        load_model(tmp_path / "off.pth")
    assert list(refused.value.missing) == ["num_heads", "decoder_num_heads", "mean", "std", "norm_pix_loss"]
    assert "off.pth?num_heads=N&decoder_num_heads=N&mean=" in str(refused.value)

    images = torch.randint(0, 256, (12, size, size, 1), generator=gen, dtype=torch.uint8)
    spec = ScoreSpec(mask_ratio=0.75, num_masks=1, seed=11)
    noise = mask_noise(spec.seed, range(12), 1, (size // patch) ** 2)[0]
    raw = images.permute(0, 3, 1, 2).float() / 255  # the trainer fed raw [0, 1] pixels
    with torch.no_grad():
        expected = independent_masked_errors(sd, raw, noise, spec.mask_ratio, 6, 5, patch).double().numpy()
    loaded = load_model(f"{tmp_path / 'off.pth'}?num_heads=6&decoder_num_heads=5&mean=0&std=1&norm_pix_loss=false")
    got = score_images(loaded.model, ArraySource(images.numpy()), spec).per_mask[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert loaded.provenance["settings_given"]["mean"] == [0.0]
    assert set(loaded.provenance["settings_assumed"]) == {"layer_norm_eps"}
    # what a guess would have scored: other heads and MAE's grey defaults give other errors
    guessed = load_model(tmp_path / "off.pth", config=dict(num_heads=1, decoder_num_heads=1, mean=(0.5,),
                                                           std=(0.5,), norm_pix_loss=False))
    wrong = score_images(guessed.model, ArraySource(images.numpy()), spec).per_mask[0]
    assert np.abs(wrong / expected - 1).max() > 1e-2


def test_a_tiny_meta_file_claiming_a_huge_model_is_refused_at_once(tiny_model, tmp_path):
    import time
    save_checkpoint(tiny_model, tmp_path / "ck")
    meta = json.loads((tmp_path / "ck" / "mimmia.json").read_text())
    meta["config"] = PRESETS_HUGE
    (tmp_path / "ck" / "mimmia.json").write_text(json.dumps(meta))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="the weights do not fit the settings: shape mismatch"):
        load_model(tmp_path / "ck")
    assert time.perf_counter() - start < 5  # allocating the claimed model would take ~50 s and 6 GB
