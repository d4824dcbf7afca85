"""The reference farm (mimmia_core.farm, `mimmia train-references`): offline and online reference sets, the
manifest's IN/OUT bookkeeping, training over 2 processes, resuming a killed farm, the online experiment it
makes, and bad inputs refused with exit 2."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mimmia_core.attacks import run_attack
from mimmia_core.checkpoint import load_own_checkpoint, save_checkpoint
from mimmia_core.cli import main
from mimmia_core.config import MAEConfig
from mimmia_core.data import ArraySource
from mimmia_core.experiment import load_experiment
from mimmia_core.farm import FarmRecipe, finished, reference_sets, train_references
from mimmia_core.manifest import CANDIDATE_SETS, SplitManifest, ids_fingerprint, make_split, reference_folder
from mimmia_core.model import build_model
from mimmia_core.scorer import Scorer
from mimmia_core.scores import ScoreSpec

TINY = dict(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32,
            decoder_depth=1, decoder_num_heads=2, mlp_ratio=2.0, mean=[0.5], std=[0.5])
RECIPE = FarmRecipe(config=TINY, epochs=1, batch_size=4, warmup_epochs=0)
COUNT, EXTRA = 4, 4


def _split(root):
    """60 random 16 px images (ids 100..159) and a split of 6 + 6 per model: 24 candidates, 36 others."""
    images = np.random.default_rng(0).integers(0, 256, (60, 16, 16, 1), dtype=np.uint8)
    ids = np.arange(100, 160)
    np.savez(root / "data.npz", images=images, ids=ids)
    manifest = make_split(ArraySource(images, ids, name="data"), f"npz:{root / 'data.npz'}", 6, 6)
    manifest.save(root / "split.json")
    return manifest


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    root = tmp_path_factory.mktemp("farm")
    manifest = _split(root)
    done = train_references(root / "split.json", COUNT, root / "refs", online=True, recipe=RECIPE, jobs=2,
                            extra=EXTRA, progress=False)
    return root, manifest, done


def test_online_sets_put_each_candidate_in_exactly_half_the_references(tmp_path):
    manifest = _split(tmp_path)
    source_ids = np.arange(100, 160)
    sets = reference_sets(manifest, source_ids, 6, online=True, extra=10, seed=3)
    candidates = np.concatenate([manifest.ids(s) for s in CANDIDATE_SETS])
    online = SplitManifest(**{**manifest.__dict__, "reference_members": sets, "online_references": True})
    inside = online.in_matrix(candidates)
    assert inside.shape == (6, 24) and (inside.sum(axis=0) == 3).all()   # IN for 3 of 6 references, each one
    pool = np.unique(np.concatenate(sets))
    assert len(pool) == 24 + 10 and set(candidates) <= set(pool.tolist())  # the candidates plus 10 others
    assert sum(len(s) for s in sets) == 3 * len(pool)                       # so each trains on half the pool
    assert reference_sets(manifest, source_ids, 6, online=True, extra=10, seed=3) == sets  # seeded
    with pytest.raises(ValueError, match="trained on target candidates"):
        SplitManifest(**{**manifest.__dict__, "reference_members": sets})  # the same sets, said to be offline


def test_offline_sets_exclude_every_candidate(tmp_path):
    manifest = _split(tmp_path)
    sets = reference_sets(manifest, np.arange(100, 160), 3, seed=1)
    candidates = set(np.concatenate([manifest.ids(s) for s in CANDIDATE_SETS]).tolist())
    assert [len(s) for s in sets] == [6, 6, 6] and not candidates & set(sum(sets, []))
    assert not SplitManifest(**{**manifest.__dict__, "reference_members": sets}).in_matrix(sorted(candidates)).any()
    with pytest.raises(ValueError, match="--size must lie in"):
        reference_sets(manifest, np.arange(100, 160), 2, size=37)  # 36 ids are outside the candidates


def test_a_manifest_without_the_online_flag_loads_as_offline(tmp_path):
    manifest = _split(tmp_path)
    d = json.loads((tmp_path / "split.json").read_text())
    del d["online_references"]
    (tmp_path / "old.json").write_text(json.dumps(d))
    old = SplitManifest.load(tmp_path / "old.json")
    assert old.online_references is False and old.target_members == manifest.target_members


def test_the_farm_records_who_was_in_where(farm):
    root, manifest, done = farm
    written = SplitManifest.load(root / "refs" / "manifest.json")
    assert written.online_references and len(written.reference_members) == COUNT
    assert written.target_members == manifest.target_members and written.seed == manifest.seed
    candidates = written.target_members + written.target_nonmembers
    assert (written.in_matrix(candidates).sum(axis=0) == COUNT // 2).all()
    assert [r["status"] for r in done] == ["trained"] * COUNT
    for i, r in enumerate(done):
        loaded = load_own_checkpoint(root / "refs" / reference_folder(i))
        p = loaded.provenance
        assert p["role"] == f"reference_{i}" and p["training_ids"] == ids_fingerprint(written.reference_members[i])
        assert p["data"]["num_images"] == len(written.reference_members[i])
        assert p["model_fingerprint"] == loaded.fingerprint == r["fingerprint"]
        assert finished(root / "refs" / reference_folder(i), RECIPE, written.reference_members[i])
    assert len({r["fingerprint"] for r in done}) == COUNT


def test_a_killed_farm_resumes_and_retrains_only_what_is_missing(farm, tmp_path):
    root, _, done = farm
    refs = shutil.copytree(root / "refs", tmp_path / "refs")
    (refs / "ref-1" / "model.safetensors").write_bytes(b"cut short")   # killed while writing (corrupt weights)
    shutil.rmtree(refs / "ref-3")                                       # killed while training, under
    (refs / ".ref-3.training").mkdir()                                  # another recipe: its state is not resumed
    (refs / ".ref-3.training" / "train_state.pt").write_bytes(b"another recipe's state")
    meta = json.loads((refs / "ref-2" / "mimmia.json").read_text())
    meta["provenance"]["farm_recipe"]["epochs"] = 2                     # trained under another recipe
    (refs / "ref-2" / "mimmia.json").write_text(json.dumps(meta))
    again = train_references(root / "split.json", COUNT, refs, online=True, recipe=RECIPE, extra=EXTRA,
                             progress=False)
    assert [r["status"] for r in again] == ["kept", "trained", "trained", "trained"]
    # the same seeds, data and one CPU thread: retraining gives the weights the first run made
    assert [r["fingerprint"] for r in again] == [r["fingerprint"] for r in done]
    assert not (refs / ".ref-3.training").exists()
    assert [r["status"] for r in train_references(root / "split.json", COUNT, refs, online=True, recipe=RECIPE,
                                                  extra=EXTRA, progress=False)] == ["kept"] * COUNT


def test_online_attacks_run_on_the_farms_references(farm, tmp_path):
    root, _, _ = farm
    config = MAEConfig(**{**TINY, "mean": (0.5,), "std": (0.5,)})
    target = save_checkpoint(build_model(config, seed=11), tmp_path / "target")
    shadow = save_checkpoint(build_model(config, seed=12), tmp_path / "shadow")
    refs = [root / "refs" / reference_folder(i) for i in range(COUNT)]
    exp = load_experiment(target, shadow, refs[::-1], manifest=root / "refs" / "manifest.json", device="cpu")
    written = SplitManifest.load(root / "refs" / "manifest.json")
    assert [ids.tolist() for ids in exp.reference_ids] == written.reference_members[::-1]  # by role, not order
    assert {"rmia", "lira_online", "rmia_online"} <= set(exp.available_attacks())
    for name in ("lira_online", "rmia_online", "calibrated", "lira", "rmia"):  # offline ones: the OUT references
        result = run_attack(name, exp, ScoreSpec(0.75, 2, 0), Scorer("cpu"))
        assert np.isfinite(result.member_scores).all() and result.threshold is not None
    offline = load_experiment(target, shadow, refs, manifest=root / "split.json", device="cpu")  # not online
    assert "lira_online" not in offline.available_attacks() and "rmia" in offline.available_attacks()
    with pytest.raises(ValueError, match="needs online references"):
        run_attack("lira_online", offline, ScoreSpec(0.75, 2, 0), Scorer("cpu"))
    meta = json.loads((refs[0] / "mimmia.json").read_text())
    del meta["provenance"]["role"]
    unnamed = shutil.copytree(refs[0], tmp_path / "unnamed")
    (unnamed / "mimmia.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not say which reference set"):
        load_experiment(target, shadow, [unnamed, *refs[1:]], manifest=root / "refs" / "manifest.json")


def test_two_torchrun_ranks_each_train_their_share_alone(farm, tmp_path):
    """Rank r of 2 trains references r, r + 2 by itself (not DDP): the weights the one-process farm made."""
    root, _, done = farm
    config = [f"--config={k}={json.dumps(v)}" for k, v in TINY.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "mimmia_core", "train-references", "--manifest", str(root / "split.json"),
                          "--count", str(COUNT), "--online", "--extra", str(EXTRA), "--out", str(tmp_path / "refs"),
                          "--epochs", "1", "--batch-size", "4", "--warmup-epochs", "0", "--device", "cpu", *config],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "2 of 4 online references (rank 0 of 2)" in run.stdout and "(rank 1 of 2)" in run.stdout
    written = SplitManifest.load(tmp_path / "refs" / "manifest.json")
    for i, r in enumerate(done):
        assert finished(tmp_path / "refs" / reference_folder(i), RECIPE, written.reference_members[i])
        assert load_own_checkpoint(tmp_path / "refs" / reference_folder(i)).fingerprint == r["fingerprint"]


@pytest.mark.parametrize("extra, message", [
    (["--count", "1", "--online"], "--count must be a whole number >= 2"),
    (["--count", "0"], "--count must be a whole number >= 1"),
    (["--count", "2", "--jobs", "0"], "--jobs must be a whole number >= 1"),
    (["--count", "2", "--online", "--size", "4"], "--size sets an offline"),
    (["--count", "2", "--extra", "3"], "--extra adds ids to the online pool"),
    (["--count", "2", "--size", "99"], "--size must lie in"),
    (["--count", "2", "--epochs", "0"], "epochs and batch_size must be positive"),
    (["--count", "2", "--mask-ratio", "1.5"], "mask"),
    (["--count", "2", "--online", "--extra", "999"], "--extra must lie in"),
])
def test_train_references_bad_inputs_exit_2(tmp_path, capsys, extra, message):
    _split(tmp_path)
    code = main(["train-references", "--manifest", str(tmp_path / "split.json"), "--out", str(tmp_path / "refs"),
                 *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "refs" / "ref-0").exists()


def test_train_references_refuses_a_missing_manifest(tmp_path, capsys):
    code = main(["train-references", "--manifest", str(tmp_path / "nope.json"), "--count", "2",
                 "--out", str(tmp_path / "refs")])
    err = capsys.readouterr().err
    assert code == 2 and "nope.json" in err and "Traceback" not in err
