"""Every bad input, through the CLI entry point in-process: exit code 2, one clear message, no traceback,
and nothing written or changed. Each case builds its inputs in a fresh folder and returns the argv; the
README's "Security and reliability" table lists the same cases (tests/test_readme.py checks it)."""
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from mimmia_core.checkpoint import META_FILE, WEIGHTS_FILE, save_checkpoint
from mimmia_core.cli import main
from mimmia_core.config import PRESETS
from mimmia_core.model import build_model

CASES = {}


def case(name, *words):
    """Register a case: fn(tmp) -> argv; the message must hold every word."""
    def register(fn):
        CASES[name] = (fn, words)
        return fn
    return register


class Kit:
    """What a case builds its inputs from: the tests' tiny config and experiment writer."""

    def __init__(self, config, experiment_writer):
        self.config, self.experiment = config, experiment_writer

    def ckpt(self, tmp, name="m", **meta):
        """A tiny mimmia checkpoint, with `meta` written over its config."""
        path = save_checkpoint(build_model(self.config, seed=1), tmp / name)
        if meta:
            data = json.loads((path / META_FILE).read_text())
            data["config"].update(meta)
            (path / META_FILE).write_text(json.dumps(data))
        return path

    def official(self, tmp, name="off.pth", **kw):
        """A tiny model's weights as an official-format .pth."""
        torch.save({"model": build_model(self.config, seed=2).state_dict(), **kw}, tmp / name)
        return tmp / name


def npz(tmp, images=None, **extra):
    images = np.zeros((4, 16, 16, 1), np.uint8) if images is None else images
    np.savez(tmp / "d.npz", images=images, **extra)
    return f"npz:{tmp / 'd.npz'}"


def score(tmp, model, data=None, *more):
    return ["score", "--model", str(model), "--data", data or npz(tmp), "--out", str(tmp / "out" / "s.csv"),
            "--device", "cpu", "--no-cache", "--num-masks", "2", *more]


# ---- models --------------------------------------------------------------------------
@case("config: patch size 0", "patch_size must be a positive integer, got 0")
def _(tmp, kit):
    return ["inspect", str(kit.ckpt(tmp, patch_size=0))]


@case("config: float image size", "img_size must be a positive integer, got 8.5")
def _(tmp, kit):
    return ["inspect", str(kit.ckpt(tmp, img_size=8.5))]


@case("HF config: num_channels null", "num_channels is null")
def _(tmp, kit):
    (tmp / "hf").mkdir()
    (tmp / "hf" / "config.json").write_text(json.dumps({"model_type": "vit_mae", "num_channels": None}))
    return ["inspect", str(tmp / "hf")]


@case("HF index: shard outside the folder", "outside the model folder")
def _(tmp, kit):
    (tmp / "hf").mkdir()
    (tmp / "hf" / "config.json").write_text(json.dumps({"model_type": "vit_mae", "image_size": 8, "patch_size": 4}))
    (tmp / "hf" / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    save_file({"x": torch.zeros(1)}, str(tmp / "secret.safetensors"))
    (tmp / "hf" / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "../secret.safetensors"}}))
    return ["inspect", str(tmp / "hf")]


@case("HF folder without preprocessor_config.json", "cannot tell mean, std", "preprocessor_config.json",
      "--model", "hf?mean=")
def _(tmp, kit):
    import transformers
    config = transformers.ViTMAEConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16,
                                       num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                       decoder_hidden_size=16, decoder_num_hidden_layers=1,
                                       decoder_num_attention_heads=2, decoder_intermediate_size=32)
    transformers.ViTMAEForPreTraining(config).save_pretrained(tmp / "hf")
    return score(tmp, tmp / "hf")


@case("official .pth of no official shape, no settings", "cannot tell num_heads, decoder_num_heads, mean, std, "
      "norm_pix_loss", "--target", "off.pth?num_heads=")
def _(tmp, kit):
    paths = kit.experiment(tmp, n_refs=0)
    return ["attack", "--target", str(kit.official(tmp)), "--shadow", str(paths["shadow"]), "--manifest",
            str(paths["manifest"]), "--out", str(tmp / "out"), "--device", "cpu", "--no-cache"]


@case("unknown setting after '?'", "unknown setting(s) ['heads']")
def _(tmp, kit):
    return ["inspect", f"{kit.official(tmp)}?heads=2"]


@case("setting of the wrong type", "num_heads takes an integer")
def _(tmp, kit):
    return ["inspect", f"{kit.official(tmp)}?num_heads=two"]


@case("settings that do not fit the weights", "shape mismatch")
def _(tmp, kit):
    return ["inspect", f"{kit.ckpt(tmp)}?embed_dim=64"]


@case("1 kB mimmia.json claiming a huge model", "the weights do not fit the settings")
def _(tmp, kit):
    return ["inspect", str(kit.ckpt(tmp, **PRESETS["mae_vit_huge_patch14"].to_dict()))]


@case("truncated safetensors", "not a readable safetensors file")
def _(tmp, kit):
    path = kit.ckpt(tmp)
    data = (path / WEIGHTS_FILE).read_bytes()
    (path / WEIGHTS_FILE).write_bytes(data[:len(data) // 2])
    return ["inspect", str(path)]


@case("corrupt .pth", "not a readable PyTorch checkpoint")
def _(tmp, kit):
    (tmp / "x.pth").write_bytes(b"\x80\x02not a pickle at all")
    return ["inspect", str(tmp / "x.pth")]


class _Shell:
    def __reduce__(self):
        return os.system, ("touch /tmp/mimmia-pwned",)


@case("malicious .pth", "refused to unpickle", "nothing from the file was executed")
def _(tmp, kit):
    (tmp / "evil.pth").write_bytes(pickle.dumps({"model": _Shell()}, protocol=2))
    return ["inspect", str(tmp / "evil.pth")]


@case("model path is a symlink loop", "symlink loop")
def _(tmp, kit):
    os.symlink(tmp / "loop", tmp / "loop")
    return score(tmp, tmp / "loop")


@case("model path missing", "no such file or directory")
def _(tmp, kit):
    return score(tmp, tmp / "nothing")


# ---- data ----------------------------------------------------------------------------
@case(".npz that is not a zip", "not an .npz (zip) archive")
def _(tmp, kit):
    (tmp / "bad.npz").write_bytes(b"random bytes, not a zip")
    return score(tmp, kit.ckpt(tmp), f"npz:{tmp / 'bad.npz'}")


@case("ids of 2**63 and above", "ids must fit in int64")
def _(tmp, kit):
    return score(tmp, kit.ckpt(tmp), npz(tmp, ids=np.array([0, 1, 2, 2 ** 63], dtype=np.uint64)))


@case("float ids in an .npz", "ids must be integers", "3.5")
def _(tmp, kit):
    return score(tmp, kit.ckpt(tmp), npz(tmp, ids=np.array([0.0, 1.0, 2.0, 3.5])))


@case("float ids in a manifest", "integer")
def _(tmp, kit):
    paths = kit.experiment(tmp, n_refs=0)
    manifest = json.loads(paths["manifest"].read_text())
    manifest["target_members"][0] += 0.5
    paths["manifest"].write_text(json.dumps(manifest))
    return ["attack", "--target", str(paths["target"]), "--manifest", str(paths["manifest"]), "--out",
            str(tmp / "out"), "--device", "cpu", "--no-cache"]


def folder(tmp, size=(16, 16), mode="L", n=3):
    (tmp / "imgs").mkdir()
    for i in range(n):
        Image.new(mode, size, 40 * i).save(tmp / "imgs" / f"{i}.png")
    return tmp / "imgs"


@case("unbounded ?resize=", "4096")
def _(tmp, kit):
    return score(tmp, kit.ckpt(tmp), f"folder:{folder(tmp)}?resize=100000x100000")


@case("image over the pixel cap", "over the cap", "downscale it first")
def _(tmp, kit):
    return score(tmp, kit.ckpt(tmp), f"folder:{folder(tmp, size=(5000, 5000), n=1)}")


@case("RGB images for a grayscale model", "?mode=L")
def _(tmp, kit):
    paths = kit.experiment(tmp, n_refs=0)
    return ["attack", "--target", str(paths["target"]), "--members", f"folder:{folder(tmp, mode='RGB')}",
            "--nonmembers", f"folder:{tmp / 'imgs'}", "--out", str(tmp / "out"), "--device", "cpu", "--no-cache"]


@case("images of the wrong size", "?resize=16x16")
def _(tmp, kit):
    paths = kit.experiment(tmp, n_refs=0)
    return ["attack", "--target", str(paths["target"]), "--members", f"folder:{folder(tmp, size=(12, 12))}",
            "--nonmembers", f"folder:{tmp / 'imgs'}", "--out", str(tmp / "out"), "--device", "cpu", "--no-cache"]


@case("data path is a symlink loop", "symlink loop")
def _(tmp, kit):
    os.symlink(tmp / "loop.npz", tmp / "loop.npz")
    return score(tmp, kit.ckpt(tmp), f"npz:{tmp / 'loop.npz'}")


@case("score gives NaN scores", "8 of 8 scores are NaN or infinite")
def _(tmp, kit):
    model = build_model(kit.config, seed=1)
    with torch.no_grad():
        model.decoder_pred.bias.fill_(float("nan"))
    return score(tmp, save_checkpoint(model, tmp / "nan"))


@case("mask ratio that leaves no patch visible", "leaves none of the 16 patches visible", "0.9375")
def _(tmp, kit):
    return score(tmp, kit.ckpt(tmp), None, "--mask-ratio", "0.95")


@case("seed that overflows 64 bits", "seed must lie in 0..2**63-1")
def _(tmp, kit):
    return score(tmp, kit.ckpt(tmp), None, "--seed", str(2 ** 64))


def _train_state(tmp, content: bytes):
    (tmp / "out" / "m").mkdir(parents=True)
    (tmp / "out" / "m" / "train_state.pt").write_bytes(content)
    return ["train", "--data", npz(tmp, images=np.zeros((8, 28, 28, 1), np.uint8)), "--out", str(tmp / "out" / "m"),
            "--epochs", "2", "--batch-size", "4", "--resume", "--device", "cpu"]


@case("corrupt --resume state", "train_state.pt", "--resume")
def _(tmp, kit):
    return _train_state(tmp, b"\x80\x02 definitely not a checkpoint")


@case("malicious --resume state", "refused to unpickle", "nothing from the file was executed")
def _(tmp, kit):
    return _train_state(tmp, pickle.dumps({"model": _Shell()}, protocol=2))


@case("train: fewer images than one batch", "fewer than one batch")
def _(tmp, kit):
    return ["train", "--data", npz(tmp), "--preset", "mae_tiny_28", "--out", str(tmp / "out" / "m"), "--epochs", "1",
            "--batch-size", "64", "--device", "cpu"]


# ---- run settings and outputs --------------------------------------------------------
@case("unknown device", "--device 'gpu0' is not a device name")
def _(tmp, kit):
    return score(tmp, kit.ckpt(tmp), None, "--device", "gpu0")


@case("absent device", "no CUDA GPU")
def _(tmp, kit):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    return score(tmp, kit.ckpt(tmp), None, "--device", "cuda:0")


@case("mask ratio out of range", "mask_ratio must lie strictly between 0 and 1")
def _(tmp, kit):
    return score(tmp, kit.ckpt(tmp), None, "--mask-ratio", "1.5")


@case("mask ratio NaN", "mask_ratio must lie strictly between 0 and 1")
def _(tmp, kit):
    return score(tmp, kit.ckpt(tmp), None, "--mask-ratio", "nan")


@case("score --out is a folder", "is a folder; give a file name")
def _(tmp, kit):
    (tmp / "out" / "s.csv").mkdir(parents=True)
    return score(tmp, kit.ckpt(tmp))


@case("attack --out under a file", "is a file, so nothing can be written under it")
def _(tmp, kit):
    (tmp / "out").write_text("a file")
    return ["attack", "--demo", "--out", str(tmp / "out" / "run"), "--no-cache"]


@case("train --out under a file", "is a file, so nothing can be written under it")
def _(tmp, kit):
    (tmp / "out").write_text("a file")
    return ["train", "--data", npz(tmp), "--preset", "mae_tiny_28", "--out", str(tmp / "out" / "m"), "--epochs", "1"]


@case("train --out not writable", "is not writable")
def _(tmp, kit):
    (tmp / "out").mkdir()
    return ["train", "--data", npz(tmp), "--out", str(tmp / "out" / "m"), "--epochs", "1"]


@case("train: bad data, --out not created", "not an .npz (zip) archive")
def _(tmp, kit):
    (tmp / "bad.npz").write_bytes(b"not a zip")
    return ["train", "--data", f"npz:{tmp / 'bad.npz'}", "--out", str(tmp / "out" / "m"), "--epochs", "1"]


@case("train: unknown config field", "--config: unknown setting(s) ['depthh']")
def _(tmp, kit):
    return ["train", "--data", npz(tmp), "--config", "depthh=2", "--out", str(tmp / "out" / "m"), "--epochs", "1"]


@case("experiment JSON with an unknown model setting", "unknown setting(s) ['heads']")
def _(tmp, kit):
    paths = kit.experiment(tmp, n_refs=0)
    (tmp / "e.json").write_text(json.dumps({"target": {"path": str(paths["target"]), "config": {"heads": 2}},
                                            "manifest": str(paths["manifest"])}))
    return ["attack", "--experiment", str(tmp / "e.json"), "--out", str(tmp / "out"), "--device", "cpu"]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tmp_path, capsys, monkeypatch, tiny_config, experiment_writer):
    fn, words = CASES[name]
    argv = fn(tmp_path, Kit(tiny_config, experiment_writer))
    if name == "train --out not writable":
        monkeypatch.setattr("mimmia_core.paths.can_write_in", lambda folder: False)
    before = {p: p.lstat().st_mtime_ns for p in tmp_path.rglob("*")}
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    errors = [line for line in err.splitlines() if "error:" in line]  # progress bars may come before it
    assert "Traceback" not in err and len(errors) == 1, err
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"
    after = {p: p.lstat().st_mtime_ns for p in tmp_path.rglob("*")}
    assert after == before, "a refused command wrote or changed files"
    assert not os.path.exists("/tmp/mimmia-pwned")


def test_the_readme_lists_every_case():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## Security and reliability"):]
    missing = [name for name in CASES if f"| {name} |" not in section]
    assert not missing, f"README's Security and reliability table lacks {missing}"
