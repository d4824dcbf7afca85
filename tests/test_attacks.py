from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mimmia_core.attacks import (ATTACKS, CalibratedAttack, LiRAAttack, PaperAttack, parse_threshold_rule, run_attack,
                                 sweep)
from mimmia_core.data import ArraySource
from mimmia_core.experiment import Experiment
from mimmia_core.metrics import roc
from mimmia_core.config import MAEConfig
from mimmia_core.scores import Scores, ScoreSpec

SPEC = ScoreSpec(num_masks=4)


class TableScorer:
    """Scores looked up in a table (model name, source name) -> per-mask distances (K, N)."""

    def __init__(self, table):
        self.table = table

    def scores(self, model, source, spec):
        return Scores(source.ids, self.table[model.path, source.name], spec)


def fake_model(name, img_size=8):
    config = MAEConfig(img_size=img_size, patch_size=4, in_chans=1, embed_dim=16, depth=1, num_heads=2,
                       decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, mean=(0.5,), std=(0.5,))
    return SimpleNamespace(path=name, config=config)


def fake_source(name, n, img_size=8):
    return ArraySource(np.zeros((n, img_size, img_size, 1), np.uint8), np.arange(n) + 1000 * len(name), name=name)


def difficulty_table(n=300, k=4, refs=3, seed=0):
    """Members reconstruct 0.8x as well as their difficulty; references see difficulty with noise.
    Per-image difficulty (lognormal, sd 1) dwarfs the membership effect, and each of the K paired
    masks has its own difficulty too."""
    rng = np.random.default_rng(seed)
    table = {}
    for role, factor in (("members", 0.8), ("nonmembers", 1.0)):
        difficulty = rng.lognormal(0, 1, size=n) * rng.lognormal(0, 0.3, size=(k, n))
        table["target", role] = difficulty * factor * rng.lognormal(0, 0.05, size=(k, n))
        for r in range(refs):
            table[f"ref-{r}", role] = difficulty * rng.lognormal(0, 0.05, size=(k, n))
    return table


def test_calibration_removes_per_image_difficulty():
    table = difficulty_table()
    scorer, members, nonmembers = TableScorer(table), fake_source("members", 300), fake_source("nonmembers", 300)
    target, refs = fake_model("target"), [fake_model(f"ref-{r}") for r in range(3)]

    def auc(attack):
        return roc(*attack.signals(target, members, nonmembers, refs, SPEC, scorer, "mean")).auc

    raw = auc(PaperAttack())
    assert 0.5 < raw < 0.7
    assert auc(CalibratedAttack()) > 0.95
    assert auc(LiRAAttack()) > 0.95
    assert auc(LiRAAttack(sigma="per_image")) > 0.9
    assert auc(CalibratedAttack(mode="difference")) > raw + 0.1


def test_calibrated_log_ratio_by_hand():
    # one image, K = 2 masks; target distances (1, 4); references (2, 2) and (4, 6)
    table = {("t", "s"): np.array([[1.0], [4.0]]), ("r0", "s"): np.array([[2.0], [2.0]]),
             ("r1", "s"): np.array([[4.0], [6.0]])}
    source, refs, spec = fake_source("s", 1), [fake_model("r0"), fake_model("r1")], ScoreSpec(num_masks=2)
    got = CalibratedAttack().signal(fake_model("t"), source, refs, spec, TableScorer(table), "mean")
    want = np.mean([np.log(3.0) - np.log(1.0), np.log(4.0) - np.log(4.0)])
    assert got == pytest.approx([want])
    got = CalibratedAttack("difference").signal(fake_model("t"), source, refs, spec, TableScorer(table), "min")
    assert got == pytest.approx([-min(1.0 - 3.0, 4.0 - 4.0)])
    # lira, pooled over one image: x_t = mean log(1, 4), refs x = mean log(2, 2), mean log(4, 6)
    x_t, x_r = np.log([1, 4]).mean(), np.array([np.log([2, 2]).mean(), np.log([4, 6]).mean()])
    got = LiRAAttack().signal(fake_model("t"), source, refs, spec, TableScorer(table), "mean")
    assert got == pytest.approx([(x_r.mean() - x_t) / x_r.std(ddof=1)])


def test_psnr_calibration_matches_mse_calibration():
    table = difficulty_table(n=20, refs=2)
    psnr_table = {key: 10 * np.log10(1.0 / d) for key, d in table.items()}
    members, target, refs = fake_source("members", 20), fake_model("target"), [fake_model("ref-0"), fake_model("ref-1")]
    for attack in (CalibratedAttack(), LiRAAttack()):
        a = attack.signal(target, members, refs, SPEC, TableScorer(table), "mean")
        b = attack.signal(target, members, refs, ScoreSpec(num_masks=4, distance="psnr"), TableScorer(psnr_table),
                          "mean")
        assert a == pytest.approx(b)


def fake_experiment(table_sizes=(20, 20, 20, 20), img_size=8, data_size=8):
    names = ("members", "nonmembers", "shadow_members", "shadow_nonmembers")
    sources = [fake_source(name, n, data_size) for name, n in zip(names, table_sizes)]
    return Experiment("fake", fake_model("target", img_size), fake_model("shadow", img_size),
                      [fake_model("ref-0", img_size), fake_model("ref-1", img_size)], *sources)


def full_table(rng, sizes=(20, 20, 20, 20)):
    table = {}
    for model in ("target", "shadow", "ref-0", "ref-1"):
        for name, n in zip(("members", "nonmembers", "shadow_members", "shadow_nonmembers"), sizes):
            member = (model, name) in {("target", "members"), ("shadow", "shadow_members")}
            table[model, name] = rng.lognormal(0, 0.2, size=(4, n)) * (0.5 if member else 1.0)
    return table


def test_run_attack_learns_the_threshold_on_the_shadow():
    rng = np.random.default_rng(1)
    table = full_table(rng)
    r = run_attack("paper", fake_experiment(), SPEC, TableScorer(table))
    assert r.threshold is not None and r.threshold_rule == "accuracy"
    sm, sn = -table["shadow", "shadow_members"].mean(0), -table["shadow", "shadow_nonmembers"].mean(0)
    assert r.shadow_member_scores == pytest.approx(sm) and r.shadow_nonmember_scores == pytest.approx(sn)
    assert ((sm >= r.threshold).sum() + (sn < r.threshold).sum()) / 40 >= 0.9
    assert r.metrics["confusion"]["accuracy"] > 0.9 and r.metrics["auc"] > 0.95
    r = run_attack("calibrated", fake_experiment(), SPEC, TableScorer(table), threshold_rule="fpr:0.05")
    assert r.threshold_rule == "fpr:0.05" and (r.shadow_nonmember_scores >= r.threshold).mean() <= 0.05


def test_run_attack_refuses_bad_input():
    table = full_table(np.random.default_rng(2))
    with pytest.raises(ValueError, match="members is empty"):
        run_attack("paper", fake_experiment((0, 20, 20, 20)), SPEC, TableScorer(full_table(
            np.random.default_rng(2), (0, 20, 20, 20))))
    with pytest.raises(ValueError, match=r"members: images are 12x12 with 1 channel\(s\), but the model target "
                                         r"expects 8x8"):
        run_attack("paper", fake_experiment(data_size=12), SPEC, TableScorer(table))
    table["shadow", "shadow_nonmembers"][1, 3] = np.nan
    with pytest.raises(ValueError, match="attack paper: 1 of 20 scores are NaN or infinite for model shadow on "
                                         "shadow_nonmembers"):
        run_attack("paper", fake_experiment(), SPEC, TableScorer(table))
    no_refs = fake_experiment()
    no_refs.references = []
    with pytest.raises(ValueError, match="needs at least 1 reference model"):
        run_attack("calibrated", no_refs, SPEC, TableScorer(table))
    no_refs.references = [fake_model("ref-0")]
    with pytest.raises(ValueError, match="attack lira needs at least 2 reference model"):
        run_attack("lira", no_refs, SPEC, TableScorer(table))
    with pytest.raises(ValueError, match="unknown attack"):
        run_attack("nope", no_refs, SPEC, TableScorer(table))


def test_parse_threshold_rule():
    assert parse_threshold_rule("accuracy") == "accuracy"
    assert parse_threshold_rule("fpr:0.01") == 0.01 and parse_threshold_rule(0.1) == 0.1
    for bad in ("fpr:2", "best", "fpr:x"):
        with pytest.raises(ValueError):
            parse_threshold_rule(bad)


def test_sweep_marks_the_best_ratio():
    rng = np.random.default_rng(3)
    tables = {0.25: full_table(rng), 0.5: full_table(rng)}
    tables[0.5]["target", "members"] = tables[0.5]["target", "nonmembers"].copy()  # no signal at 0.5

    class RatioScorer:
        def scores(self, model, source, spec):
            return Scores(source.ids, tables[spec.mask_ratio][model.path, source.name], spec)

    rows = sweep(fake_experiment(), [0.25, 0.5], ["paper", "calibrated"], SPEC, RatioScorer())
    assert [(r["mask_ratio"], r["attack"]) for r in rows] == [(0.25, "paper"), (0.25, "calibrated"),
                                                              (0.5, "paper"), (0.5, "calibrated")]
    assert [r["best"] for r in rows] == [True, True, False, False]
    assert rows[0]["auc"] > 0.95 and rows[2]["auc"] == pytest.approx(0.5, abs=0.15)
    assert {"tpr@0.01", "tpr@0.01_lo", "tpr@0.01_hi", "accuracy"} <= set(rows[0])
    with pytest.raises(ValueError, match="unmasked"):
        sweep(fake_experiment(), [0.5], ["unmasked"], SPEC, RatioScorer())


def test_every_attack_is_registered():
    assert set(ATTACKS) == {"paper", "calibrated", "lira", "rmia", "lira_online", "rmia_online", "encodermi",
                            "unmasked"}


def test_run_attack_end_to_end_for_every_attack(tmp_path, experiment_writer):
    from mimmia_core.experiment import load_experiment
    from mimmia_core.masking import smallest_mask_ratio
    from mimmia_core.encodermi import embedding_similarity
    from mimmia_core.scorer import Scorer
    from mimmia_core.scores import score_images

    paths = experiment_writer(tmp_path)
    exp = load_experiment(paths["target"], paths["shadow"], paths["refs"], manifest=paths["manifest"], device="cpu")
    spec, scorer = ScoreSpec(mask_ratio=0.5, num_masks=3, seed=7), Scorer(device="cpu", batch_size=5)
    target = score_images(exp.target.model, exp.members, spec)
    refs = [score_images(r.model, exp.members, spec) for r in exp.references]
    want = {
        "paper": -target.per_mask.mean(0),
        "calibrated": (np.log(np.mean([r.per_mask for r in refs], axis=0)) - np.log(target.per_mask)).mean(0),
        "encodermi": embedding_similarity(exp.target.model, exp.members, num_views=8, seed=7),
        "unmasked": -score_images(exp.target.model, exp.members, ScoreSpec(smallest_mask_ratio(exp.target.config.num_patches), 3, 7, "all_mse"))
        .per_mask.mean(0),
    }
    x_r = np.stack([np.log(r.per_mask).mean(0) for r in refs])
    want["lira"] = (x_r.mean(0) - np.log(target.per_mask).mean(0)) / np.sqrt(x_r.var(0, ddof=1).mean())
    z_t = score_images(exp.target.model, exp.shadow_nonmembers, spec)  # RMIA's population: the shadow's non-members
    z_r = [score_images(r.model, exp.shadow_nonmembers, spec) for r in exp.references]
    tau = np.median([r.per_mask for r in z_r])
    log_lr = lambda t, rs: (-t.per_mask / tau - np.log(np.mean([np.exp(-r.per_mask / tau) for r in rs], 0))).mean(0)
    x, z = log_lr(target, refs), log_lr(z_t, z_r)  # fraction of z below, ties broken by LR(x)
    want["rmia"] = (z[None, :] < x[:, None]).mean(1) + (1 + x / (1 + abs(x))) / (4 * len(z))
    assert exp.available_attacks() == [a for a in ATTACKS if not ATTACKS[a].online]  # the references are offline
    for name in exp.available_attacks():
        r = run_attack(name, exp, spec, scorer)
        assert r.attack == name and r.member_ids.tolist() == exp.members.ids.tolist()
        assert r.member_scores == pytest.approx(want[name], rel=1e-5), name
        assert r.shadow_member_scores.shape == (6,) and r.threshold is not None
        m, n = r.member_scores[:, None], r.nonmember_scores[None, :]  # AUC as Mann-Whitney over all pairs
        assert r.metrics["auc"] == pytest.approx((m > n).mean() + 0.5 * (m == n).mean(), abs=1e-12)
        assert r.metrics["min_measurable_fpr"] == pytest.approx(1 / 6)
        assert r.metrics["confusion"]["tp"] + r.metrics["confusion"]["fn"] == 6


def normalised_model(name, mean=(0.5,), std=(0.5,), norm_pix_loss=False):
    config = MAEConfig(img_size=8, patch_size=4, in_chans=1, embed_dim=16, depth=1, num_heads=2,
                       decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, mean=mean, std=std,
                       norm_pix_loss=norm_pix_loss)
    return SimpleNamespace(path=name, config=config)


def test_comparable_spec_switches_target_space_distances_only_where_normalisations_differ():
    from mimmia_core.attacks import PIXEL_DEFAULT, comparable_spec
    same = [normalised_model("t"), normalised_model("s")]
    assert comparable_spec(same, SPEC) == (SPEC, None)
    for other in (normalised_model("s", std=(0.25,)), normalised_model("s", mean=(0.4,)),
                  normalised_model("s", norm_pix_loss=True)):
        for distance in ("masked_mse", "all_mse"):
            spec, note = comparable_spec([normalised_model("t"), other], replace(SPEC, distance=distance))
            assert spec == replace(SPEC, distance=PIXEL_DEFAULT) == replace(SPEC, distance="pixel_mse_raw")
            assert f"so {distance}, measured in each model's own normalisation, is not comparable" in note
            assert "t: mean [0.5], std [0.5]" in note and "scored with pixel_mse_raw" in note
        for distance in ("pixel_mse", "pixel_mse_raw", "pixel_l1", "psnr"):  # already in pixel space
            assert comparable_spec([normalised_model("t"), other], replace(SPEC, distance=distance))[1] is None
    exp = fake_experiment()
    exp.references = [normalised_model("ref-0", std=(0.2,))]
    assert comparable_spec(exp, SPEC)[0].distance == "pixel_mse_raw"  # an Experiment: all its models


def test_a_shadow_that_normalises_otherwise_is_compared_in_pixel_space():
    """The shadow's std is half the target's: its target-space distances are 4x larger, and its threshold
    classifies nothing on the target (accuracy 0.5). run_attack scores both in pixel space instead."""
    rng = np.random.default_rng(4)
    pixel = full_table(rng)
    target_space = {k: v * (4.0 if k[0] == "shadow" else 1.0) for k, v in pixel.items()}
    asked = set()

    class UnitScorer:
        def scores(self, model, source, spec):
            asked.add(spec.distance)
            table = pixel if spec.distance == "pixel_mse_raw" else target_space
            return Scores(source.ids, table[model.path, source.name], spec)

    exp = fake_experiment()
    naive = run_attack("paper", exp, SPEC, UnitScorer())
    assert naive.metrics["confusion"]["accuracy"] == pytest.approx(0.5) and naive.notes == []
    exp.shadow = normalised_model("shadow", std=(0.25,))
    asked.clear()
    r = run_attack("paper", exp, SPEC, UnitScorer())
    assert asked == {"pixel_mse_raw"} and r.spec == replace(SPEC, distance="pixel_mse_raw")
    assert r.metrics["confusion"]["accuracy"] > 0.9 and len(r.notes) == 1 and "shadow: mean [0.5], std [0.25]" in \
        r.notes[0]
    assert r.member_scores == pytest.approx(-pixel["target", "members"].mean(0))
    # the attack table and both reports carry the note
    from mimmia_core.report import attack_table, result_summary, sweep_table
    assert f"note: paper: {r.notes[0]}" in attack_table([r]).splitlines()
    assert result_summary(r)["notes"] == r.notes
    rows = sweep(exp, [0.75], ["paper"], SPEC, UnitScorer())
    assert rows[0]["distance"] == "pixel_mse_raw" and rows[0]["note"] == r.notes[0]
    assert sweep_table(rows).splitlines()[-1] == f"note: paper: {r.notes[0]}"


def test_unmasked_scores_all_mse_and_encodermi_is_not_switched():
    from mimmia_core.attacks import EncoderMIAttack, UnmaskedAttack
    assert UnmaskedAttack.distance == "all_mse" and not EncoderMIAttack.uses_distance
    seen = []

    class Recorder:
        def scores(self, model, source, spec):
            seen.append((spec.distance, spec.mask_ratio))
            return Scores(source.ids, np.ones((4, len(source))) * (1 + len(seen) % 3), spec)

    exp = fake_experiment()
    r = run_attack("unmasked", exp, SPEC, Recorder())
    assert r.spec.distance == "all_mse" and {d for d, _ in seen} == {"all_mse"} and r.notes == []
    assert {ratio for _, ratio in seen} == {0.125}  # one of the 4 patches
    exp.shadow, seen[:] = normalised_model("shadow", norm_pix_loss=True), []
    r = run_attack("unmasked", exp, SPEC, Recorder())
    assert r.spec.distance == "pixel_mse_raw" and {d for d, _ in seen} == {"pixel_mse_raw"} and r.notes


def test_real_models_that_normalise_differently_end_to_end(tmp_path, monkeypatch, experiment_writer):
    import json

    from mimmia_core import atomic
    from mimmia_core.experiment import load_experiment
    from mimmia_core.report import write_attack_report
    from mimmia_core.scorer import Scorer
    from mimmia_core.scores import score_images

    paths = experiment_writer(tmp_path)
    exp = load_experiment(paths["target"], f"{paths['shadow']}?mean=0.3&std=0.2", paths["refs"],
                          manifest=paths["manifest"], device="cpu")
    spec = ScoreSpec(mask_ratio=0.5, num_masks=2, seed=1)
    results = [run_attack(name, exp, spec, Scorer(device="cpu")) for name in ("paper", "calibrated")]
    for r in results:
        assert r.spec.distance == "pixel_mse_raw" and "std [0.2]" in r.notes[0]
    want = score_images(exp.target.model, exp.members, replace(spec, distance="pixel_mse_raw"))
    assert results[0].member_scores == pytest.approx(-want.per_mask.mean(0), rel=1e-6)
    # report.json records the distance used and the notes; an --out that cannot be written keeps the report
    real = atomic.atomic_write_bytes

    def refuse(path, data):
        if tmp_path / "out" in Path(path).parents:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, data)
    monkeypatch.setattr(atomic, "atomic_write_bytes", refuse)
    with pytest.warns(atomic.WriteWarning, match=r"could not write the attack report to .*out/(report.json|scores.csv)"):
        report, scores = write_attack_report(tmp_path / "out", exp, results, {})
    assert not (tmp_path / "out").exists() and report.parent == scores.parent
    doc = json.loads(report.read_text())
    assert [x["spec"]["distance"] for x in doc["results"]] == ["pixel_mse_raw"] * 2
    assert doc["results"][1]["notes"] == results[1].notes
