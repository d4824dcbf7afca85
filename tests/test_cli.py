import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mimmia_core.checkpoint import load_model, save_checkpoint
from mimmia_core.cli import main, training
from mimmia_core.metrics import best_accuracy_threshold, evaluate
from mimmia_core.model import build_model
from mimmia_core.scores import ScoreSpec, score_images


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, experiment_writer):
    return experiment_writer(tmp_path_factory.mktemp("cli"))


def models(tiny):
    return ["--target", str(tiny["target"]), "--shadow", str(tiny["shadow"]),
            *[a for r in tiny["refs"] for a in ("--reference", str(r))]]


def read_csv(path):
    """Rows of a CSV; scores.csv's '#' audit lines on top are skipped (as pandas.read_csv(comment="#") does)."""
    with open(path) as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def test_attack_writes_report_and_scores(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["attack", *models(tiny), "--manifest", str(tiny["manifest"]), "--num-masks", "3", "--seed", "5",
            "--attacks", "paper,calibrated", "--out", str(out), "--device", "cpu", "--cache-dir", str(tmp_path / "c")]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["attack", "AUC", "TPR@10%"]
    assert [line.split()[0] for line in table.splitlines()[1:3]] == ["paper", "calibrated"]

    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["spec"] == dict(mask_ratio=0.75, num_masks=3, seed=5, distance="masked_mse")
    assert set(report["versions"]) >= {"mimmia", "torch", "timm", "python"}
    assert report["experiment"]["target"]["fingerprint"] == load_model(tiny["target"]).fingerprint
    assert [r["attack"] for r in report["results"]] == ["paper", "calibrated"]

    rows = read_csv(out / "scores.csv")
    assert list(rows[0]) == ["id", "role", "label", "paper", "paper_rank", "calibrated", "calibrated_rank"]
    roles = [r["role"] for r in rows]
    assert [roles.count(x) for x in ("target_members", "target_nonmembers", "shadow_members", "shadow_nonmembers")] == \
        [6, 6, 6, 6]
    manifest = json.loads(tiny["manifest"].read_text())
    assert [int(r["id"]) for r in rows if r["role"] == "target_members"] == manifest["target_members"]

    # the per-image scores are the model's, and the report's numbers follow from them
    def column(role, attack):
        return np.array([float(r[attack]) for r in rows if r["role"] == role])
    members = load_model(tiny["target"])
    from mimmia_core.data import load_npz
    source = load_npz(tiny["data"]).subset(manifest["target_members"])
    want = -score_images(members.model, source, ScoreSpec(num_masks=3, seed=5)).per_mask.mean(0)
    assert column("target_members", "paper") == pytest.approx(want, rel=1e-6)
    for result in report["results"]:
        a = result["attack"]
        threshold = best_accuracy_threshold(column("shadow_members", a), column("shadow_nonmembers", a))
        assert result["threshold"] == pytest.approx(threshold)
        again = evaluate(column("target_members", a), column("target_nonmembers", a), threshold)
        assert result["metrics"]["auc"] == pytest.approx(again["auc"])
        assert result["metrics"]["confusion"] == pytest.approx(again["confusion"])
        assert result["metrics"]["tpr_at"]["0.01"]["hi"] == pytest.approx(again["tpr_at"][0.01]["hi"])
    assert list((tmp_path / "c").glob("*.npz"))  # scores were cached


def test_attack_with_explicit_sources_and_no_shadow(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["attack", "--target", str(tiny["target"]), "--members", f"npz:{tiny['data']}",
                 "--nonmembers", f"npz:{tiny['data']}", "--num-masks", "2", "--threshold", "fpr:0.1",
                 "--out", str(out), "--device", "cpu", "--no-cache"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["attacks"] == ["paper", "encodermi", "unmasked"] and report["results"][0]["threshold"] is None
    assert report["results"][0]["metrics"]["auc"] == pytest.approx(0.5)  # the same images on both sides
    assert capsys.readouterr().out.splitlines()[1].split()[-1] == "-"
    assert {r["role"] for r in read_csv(out / "scores.csv")} == {"target_members", "target_nonmembers"}


def test_sweep_marks_the_best_ratio(tiny, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", *models(tiny), "--manifest", str(tiny["manifest"]), "--num-masks", "2",
                 "--ratios", "0.25,0.5", "--attacks", "paper,lira", "--out", str(out), "--device", "cpu",
                 "--no-cache"]) == 0
    doc = json.loads((out / "sweep.json").read_text())
    assert [(r["mask_ratio"], r["attack"]) for r in doc["rows"]] == [(0.25, "paper"), (0.25, "lira"),
                                                                     (0.5, "paper"), (0.5, "lira")]
    for attack in ("paper", "lira"):
        mine = [r for r in doc["rows"] if r["attack"] == attack]
        best = [r for r in mine if r["best"]]
        assert len(best) == 1 and best[0]["auc"] == max(r["auc"] for r in mine)
        assert doc["best"][attack] == best[0]["mask_ratio"]
    assert len(read_csv(out / "sweep.csv")) == 4
    assert capsys.readouterr().out.count("<- best") == 2


def test_score_writes_per_mask_distances(tiny, tmp_path):
    out = tmp_path / "scores.csv"
    assert main(["score", "--model", str(tiny["target"]), "--data", f"npz:{tiny['data']}", "--num-masks", "2",
                 "--distance", "pixel_l1", "--out", str(out), "--device", "cpu", "--no-cache"]) == 0
    rows = read_csv(out)
    assert list(rows[0]) == ["id", "mean_pixel_l1", "mask_0", "mask_1"] and len(rows) == 40
    from mimmia_core.data import load_npz
    want = score_images(load_model(tiny["target"]).model, load_npz(tiny["data"]), ScoreSpec(0.75, 2, 0, "pixel_l1"))
    assert [float(r["mask_1"]) for r in rows] == pytest.approx(want.per_mask[1], rel=1e-6)


def test_score_precision_flag(tiny, tmp_path):
    """--precision bf16 runs bf16 autocast on the CPU: close to fp32, but not the same numbers."""
    args = ["score", "--model", str(tiny["target"]), "--data", f"npz:{tiny['data']}", "--num-masks", "2",
            "--device", "cpu", "--no-cache"]
    for precision in ("fp32", "bf16"):
        assert main([*args, "--precision", precision, "--out", str(tmp_path / f"{precision}.csv")]) == 0
    fp32, bf16 = ([float(r["mask_0"]) for r in read_csv(tmp_path / f"{p}.csv")] for p in ("fp32", "bf16"))
    assert fp32 != bf16
    assert bf16 == pytest.approx(fp32, rel=3e-2)


def test_inspect_prints_json(tiny, capsys):
    assert main(["inspect", str(tiny["target"])]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["fingerprint"] == load_model(tiny["target"]).fingerprint and d["has_decoder"]


def test_train_a_manifest_role(tiny, tmp_path):
    out = tmp_path / "ref"
    overrides = ["img_size=16", "embed_dim=16", "depth=1", "num_heads=2", "decoder_embed_dim=16",
                 "decoder_depth=1", "decoder_num_heads=2"]
    assert main(["train", "--preset", "mae_tiny_28", *[a for o in overrides for a in ("--config", o)],
                 "--manifest", str(tiny["manifest"]), "--role", "reference_1", "--epochs", "1", "--batch-size", "2",
                 "--lr", "1e-3", "--warmup-epochs", "0", "--out", str(out), "--device", "cpu"]) == 0
    trained = load_model(out)
    p = trained.provenance
    assert p["role"] == "reference_1" and p["manifest"]["path"] == str(tiny["manifest"])
    assert p["data"]["num_images"] == 4 and p["data_spec"] == f"npz:{tiny['data']}"
    assert p["config_overrides"]["embed_dim"] == 16 and trained.config.embed_dim == 16
    assert p["train_config"]["lr"] == 1e-3


def test_build_demo_is_wired(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(training, "build_demo", lambda out, recipe, **kw: calls.append((out, recipe, kw)) or Path(out))
    assert main(["build-demo", "--out", str(tmp_path), "--device", "cpu", "--epochs", "3", "--jobs", "2"]) == 0
    (out, recipe, kw), = calls
    assert out == str(tmp_path) and recipe.epochs == 3 and kw["jobs"] == 2 and kw["device"] == torch.device("cpu")


def test_errors_are_one_clear_line(tiny, tiny_config, tmp_path, capsys):
    empty, big = tmp_path / "empty.npz", tmp_path / "big.npz"
    np.savez(empty, images=np.zeros((0, 8, 8, 1), np.uint8))
    np.savez(big, images=np.zeros((3, 12, 12, 1), np.uint8))
    model = build_model(tiny_config, seed=9)
    with torch.no_grad():
        model.decoder_pred.bias[0] = float("nan")
    save_checkpoint(model, tmp_path / "nan-model")
    base = ["attack", "--out", str(tmp_path / "o"), "--device", "cpu", "--no-cache", "--num-masks", "2"]
    data = f"npz:{tiny['data']}"
    cases = [
        (["--target", str(tiny["target"]), "--members", f"npz:{empty}", "--nonmembers", data], "empty is empty"),
        (["--target", str(tiny["target"]), "--members", f"npz:{big}", "--nonmembers", data],
         "big: images are 12x12 with 1 channel(s), but the model"),
        (["--target", str(tmp_path / "nan-model"), "--members", data, "--nonmembers", data],
         "attack paper: 40 of 40 scores are NaN or infinite for model"),
        (["--target", str(tmp_path / "missing"), "--members", data, "--nonmembers", data], "no such file"),
        (["--target", str(tiny["target"]), "--members", data, "--nonmembers", data, "--threshold", "fpr:2"],
         "threshold FPR must lie in [0, 1]"),
        (["--target", str(tiny["target"]), "--members", data, "--nonmembers", data, "--attacks", "paper,magic"],
         "unknown attack 'magic'"),
        (["--target", str(tiny["target"]), "--members", data, "--nonmembers", data, "--attacks", "calibrated"],
         "needs at least 1 reference model"),
        (["--demo", "--target", str(tiny["target"])], "--demo brings its own models and data; drop --target"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2, message
        err = capsys.readouterr().err
        assert "mimmia attack: error: " in err and message in err and "Traceback" not in err
    assert main(["sweep", "--target", str(tiny["target"]), "--members", data, "--nonmembers", data, "--ratios",
                 "0.5,1.5", "--out", str(tmp_path / "s")]) == 2
    assert "mask_ratio must lie strictly between 0 and 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "s").exists()


def test_module_entry_point():
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, "-m", "mimmia_core", "--help"], capture_output=True, text=True, cwd=root)
    assert r.returncode == 0 and "attack" in r.stdout and "build-demo" in r.stdout


def test_attack_on_a_bundle_folder(tiny, tmp_path, capsys):
    """--bundle DIR opens a folder laid out like assets/demo, as MIMMIA_EXPERIMENT=DIR does in the dashboard."""
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny["target"].parent, bundle / "models")
    shutil.copy(tiny["data"], bundle / "fashion_mnist_subset.npz")
    shutil.copy(tiny["manifest"], bundle / "manifest.json")
    out = tmp_path / "run"
    assert main(["attack", "--bundle", str(bundle), "--attacks", "paper", "--num-masks", "2", "--out", str(out),
                 "--device", "cpu", "--no-cache"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["inputs"]["bundle"] == str(bundle) and len(report["experiment"]["references"]) == 2
    assert main(["attack", "--bundle", str(bundle), "--demo", "--out", str(out)]) == 2
    assert "--demo" in capsys.readouterr().err
    assert main(["attack", "--bundle", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "no such folder" in capsys.readouterr().err
