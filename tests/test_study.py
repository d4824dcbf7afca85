"""Studies: every built-in study runs end to end in --quick mode and writes valid results; a killed study
resumes without retraining finished models or rescoring finished points; specs and bad inputs are checked."""
import csv
import json

import numpy as np
import pytest

from mimmia_core.cli import main
from mimmia_core.data import FASHION_MNIST_DIRS
from mimmia_core.study import (BUILTIN_STUDIES, StudySpec, load_study, load_study_spec, point_scores, run_study,
                               tradeoff_rows, tradeoff_sentence)
from mimmia_core.study.results import CSV_COLUMNS, attacks_table, finding
from mimmia_core.manifest import SplitManifest
from mimmia_core.study.runner import plan_point
from mimmia_core.study.spec import apply_settings, check_point, model_recipe
from mimmia_core.study.split import draw_split

needs_fashion_mnist = pytest.mark.skipif(
    not any((d / "train-images-idx3-ubyte").exists() or (d / "train-images-idx3-ubyte.gz").exists()
            for d in FASHION_MNIST_DIRS),
    reason="Fashion-MNIST files not found (Debian: apt-get install dataset-fashion-mnist)")


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """One models folder for every quick study: what they share is trained once."""
    return tmp_path_factory.mktemp("study_work")


def logged(lines):
    return lambda line: lines.append(line)


@needs_fashion_mnist
@pytest.mark.parametrize("name", list(BUILTIN_STUDIES))
def test_every_builtin_study_runs_quick_and_writes_valid_results(name, tmp_path, work):
    spec = load_study_spec(name)
    path = run_study(spec, tmp_path / name, quick=True, work_dir=work, log=logged([]))
    doc = load_study(path)
    points = spec.resolved_points(quick=True)
    assert [p["value"] for p in doc["points"]] == [v for v, _, _ in points]
    for record in doc["points"]:
        assert record["results"] and set(record["models"]) >= {"target", "shadow"}
        for r in record["results"]:
            assert 0 <= r["auc"] <= 1 and r["min_measurable_fpr"] == pytest.approx(1 / r["n_nonmembers"])
            assert r["tpr_at"]["0.001"] is None  # 8 non-members: 0.1% FPR is not measurable
            members, nonmembers = point_scores(doc, record, r["attack"], r["mask_ratio"])
            assert (len(members), len(nonmembers)) == (r["n_members"], r["n_nonmembers"])
            m, n = members[:, None], nonmembers[None, :]  # AUC as Mann-Whitney from the stored scores
            assert r["auc"] == pytest.approx((m > n).mean() + 0.5 * (m == n).mean(), abs=1e-12)
    rows = list(csv.DictReader((path.parent / "study.csv").open()))
    assert list(rows[0]) == CSV_COLUMNS
    assert len(rows) == sum(len(p["results"]) for p in doc["points"])
    assert doc["finding"] == finding(spec, doc["points"]) and doc["finding"] != "Not enough points to compare."


@needs_fashion_mnist
def test_a_killed_study_resumes_without_retraining(tmp_path):
    spec = load_study_spec("shadow-mask-ratio")
    lines = []

    def die_after_two_models(line):
        lines.append(line)
        if sum("trained" in x for x in lines) == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_study(spec, tmp_path, quick=True, log=die_after_two_models)
    first = [x for x in lines if "trained" in x]
    resumed = []
    run_study(spec, tmp_path, quick=True, log=logged(resumed))
    trained_again = [x.split("] trained ")[1] for x in resumed if "trained" in x]
    assert not set(trained_again) & {x.split("] trained ")[1] for x in first}
    assert len(trained_again) == 6 - 2  # target, 2 references and 3 shadows in all
    again = []
    run_study(spec, tmp_path, quick=True, log=logged(again))
    assert not [x for x in again if "trained" in x or "scored" in x]  # everything reused
    (tmp_path / "points" / "01-0.75.json").unlink()  # a point killed before its record was written
    after = []
    run_study(spec, tmp_path, quick=True, log=logged(after))
    assert [x for x in after if "scored" in x] == ["scored point 0.75"]


@needs_fashion_mnist
def test_the_online_study_records_who_was_in_where_and_runs_offline_and_online_attacks(tmp_path, work):
    spec = load_study_spec("online")
    doc = load_study(run_study(spec, tmp_path, quick=True, work_dir=work, log=logged([])))
    [record] = doc["points"]
    by = {r["attack"]: r for r in record["results"]}
    assert list(by) == ["paper", "lira", "rmia", "lira_online", "rmia_online"]
    assert by["paper"]["balanced_accuracy"] is not None and by["lira_online"]["balanced_accuracy"] is None  # no shadow
    table = attacks_table(record).splitlines()
    assert len(table) == 2 + 5 and table[3] == f"| offline LiRA | 0.75 | {by['lira']['auc']:.3f} | — | — | " \
        f"{by['lira']['balanced_accuracy']:.3f} |"  # 24 non-members: 1% FPR is not measurable
    assert table[5].startswith("| online LiRA |") and table[5].endswith("| — |")  # no shadow, no threshold
    manifest = SplitManifest.load(tmp_path / record["manifest_file"])
    candidates = manifest.target_members + manifest.target_nonmembers
    inside = manifest.in_matrix(candidates)
    assert manifest.online_references and inside.shape == (4, 8 + 24) and (inside.sum(axis=0) == 2).all()
    [(value, label, point)] = spec.resolved_points(quick=True)
    jobs = plan_point(0, value, label, point, {}).jobs
    assert [list(jobs[f"online_{i}"].ids) for i in range(4)] == manifest.reference_members
    assert not set(candidates) & {i for r in range(4) for i in jobs[f"reference_{r}"].ids}  # offline: all OUT
    assert {f"online_{i}" for i in range(4)} | {f"reference_{i}" for i in range(4)} <= set(record["models"])
    with pytest.raises(ValueError, match="data.online_references must be 0 or a whole number >= 2"):
        check_point(apply_settings(point, {"data.online_references": 1}), "here")


def test_settings_apply_and_models_inherit_the_targets_recipe():
    point = apply_settings(apply_settings({"target": {"epochs": 5, "mask_ratio": 0.75, "config": {}},
                                           "shadow": {}, "reference": {}}, {"shadow.mask_ratio": 0.5}),
                           {"target.config.embed_dim": 64})
    assert model_recipe(point, "shadow") == {"epochs": 5, "mask_ratio": 0.5, "config": {"embed_dim": 64}}
    assert model_recipe(point, "reference") == point["target"]
    with pytest.raises(ValueError, match="unknown study setting 'target.epoch'"):
        apply_settings(point, {"target.epoch": 3})
    with pytest.raises(ValueError, match="'epochs' is not a group"):
        apply_settings(point, {"target.epochs.x": 3})


def test_split_is_disjoint_and_a_foreign_shadow_keeps_the_targets_images(tmp_path):
    images = np.zeros((60, 16, 16, 1), np.uint8)
    np.savez(tmp_path / "a.npz", images=images, ids=np.arange(1000, 1060))
    np.savez(tmp_path / "b.npz", images=images[:20], ids=np.arange(20))
    data = {"target": f"npz:{tmp_path / 'a.npz'}", "shadow": None, "members": 5, "nonmembers": 7, "references": 2}
    same = draw_split(data, seed=3)
    sets = [same.members, same.nonmembers, same.shadow_members, same.shadow_nonmembers, *same.references]
    assert [len(s) for s in sets] == [5, 7, 5, 7, 5, 5]
    assert len(np.unique(np.concatenate(sets))) == 34
    other = draw_split({**data, "shadow": f"npz:{tmp_path / 'b.npz'}"}, seed=3)
    assert np.array_equal(other.members, same.members) and np.array_equal(other.references[1], same.references[1])
    assert set(other.shadow_members) | set(other.shadow_nonmembers) <= set(range(20))
    with pytest.raises(ValueError, match="has 60 images, but the point needs 62"):
        draw_split({**data, "members": 10, "nonmembers": 11}, seed=0)


def test_a_json_spec_is_read_and_checked(tmp_path):
    good = {"name": "wd", "variable": "target.weight_decay", "points": [{"value": 0.0}, {"value": 0.05,
                                                                        "set": {"target.weight_decay": 0.05}}]}
    (tmp_path / "wd.json").write_text(json.dumps(good))
    spec = load_study_spec(str(tmp_path / "wd.json"))
    assert isinstance(spec, StudySpec) and [p["target"]["weight_decay"] for _, _, p in spec.resolved_points()] == \
        [0.0, 0.05]
    (tmp_path / "bad.json").write_text(json.dumps({**good, "points": [{"value": 1, "set": {"attack.attacks": ["x"]}}]}))
    with pytest.raises(ValueError, match=r"unknown attack\(s\) \['x'\]"):
        load_study_spec(str(tmp_path / "bad.json")).resolved_points()


@pytest.mark.parametrize("argv, words", [
    (["study", "no-such-study"], "unknown study 'no-such-study'"),
    (["study", "{tmp}/broken.json"], "not valid JSON"),
    (["study", "{tmp}/absent.json"], "no such file"),
    (["study", "epochs", "--jobs", "0"], "--jobs must be at least 1"),
])
def test_study_cli_bad_inputs(argv, words, tmp_path, capsys):
    (tmp_path / "broken.json").write_text("{")
    argv = [a.format(tmp=tmp_path) for a in argv] + ["--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def _record(label, auc, tpr, probe):
    return {"id": label, "value": label, "label": label, "models": {"target": "x"},
            "utility": None if probe is None else {"probe_accuracy": probe, "reconstruction_loss": 0.1},
            "results": [{"attack": "lira", "mask_ratio": 0.75, "auc": auc, "balanced_accuracy": 0.5,
                         "tpr_at": {"0.01": None if tpr is None else {"tpr": tpr, "lo": 0, "hi": 1}}}]}


def test_the_pareto_front_and_the_sentence_by_hand():
    records = [_record("none", 0.9, 0.40, 0.80), _record("wd", 0.8, 0.30, 0.80), _record("dp", 0.55, 0.02, 0.50),
               _record("bad", 0.85, 0.35, 0.70), _record("unmeasured", 0.5, 0.1, None)]
    rows = tradeoff_rows(records, "lira", 0.75)
    assert [r["pareto"] for r in rows] == [False, True, True, False, False]  # wd beats none and bad outright
    assert tradeoff_sentence(rows, "offline LiRA") == (
        "Undefended (none), offline LiRA finds 40.0% of the members at 1% FPR (AUC 0.900). The strongest defense "
        "here, dp, brings that to 2.0% (AUC 0.550) and costs 30.0% of linear-probe accuracy (80.0% to 50.0%).")
