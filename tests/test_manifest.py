import json
import re

import numpy as np
import pytest

from mimmia_core import atomic as mio
from mimmia_core.data import ArraySource
from mimmia_core.manifest import (CANDIDATE_SETS, MODEL_ROLES, SplitManifest, make_split, reference_folder,
                                  reference_index, reference_set, set_label, set_name, training_set)


def source(n=100, seed=0):
    images = np.random.default_rng(seed).integers(0, 256, (n, 4, 4, 1), dtype=np.uint8)
    return ArraySource(images, ids=np.arange(1000, 1000 + n), name="toy")


def test_make_split_sizes_and_disjointness():
    m = make_split(source(), "npz:toy.npz", n_members=10, n_nonmembers=7, n_references=3,
                   n_reference_members=8, seed=4)
    sizes = [len(m.ids(r)) for r in ("target_members", "target_nonmembers", "shadow_members", "shadow_nonmembers")]
    assert sizes == [10, 7, 10, 7]
    assert [len(r) for r in m.reference_members] == [8, 8, 8]
    every = np.concatenate([m.ids(r) for r in ("target_members", "target_nonmembers", "shadow_members",
                                               "shadow_nonmembers", "reference_0", "reference_1", "reference_2")])
    assert len(np.unique(every)) == len(every) == 2 * 17 + 24
    assert set(every) <= set(range(1000, 1100))
    assert all((np.diff(m.ids(r)) > 0).all() for r in ("target_members", "reference_2"))
    assert m.source == "npz:toy.npz" and m.source_fingerprint == source().fingerprint() and m.seed == 4
    with pytest.raises(ValueError, match="references"):
        m.ids("reference_3")


def test_make_split_seed_and_default_spec():
    s = source()
    s.spec = "npz:toy.npz"
    a, b = make_split(s, None, 5, 5, 1, seed=1), make_split(s, None, 5, 5, 1, seed=1)
    assert a == b and a.source == "npz:toy.npz"
    assert make_split(s, None, 5, 5, 1, seed=2).target_members != a.target_members
    with pytest.raises(ValueError, match="not opened from a spec"):
        make_split(source(), None, 5, 5)


def test_make_split_refuses_impossible_splits():
    with pytest.raises(ValueError, match="needs 110"):
        make_split(source(), "x", 20, 20, 3, n_reference_members=10)
    with pytest.raises(ValueError, match="at least one member"):
        make_split(source(), "x", 0, 5)
    with pytest.raises(ValueError, match="n_references"):
        make_split(source(), "x", 5, 5, n_references=-1)


def test_save_load_round_trip_is_atomic(tmp_path, monkeypatch):
    m = make_split(source(), "demo", 6, 6, 2, seed=3)
    path = m.save(tmp_path / "sub" / "manifest.json")
    assert json.loads(path.read_text())["format"] == "mimmia-split"
    assert SplitManifest.load(path) == m
    assert [p.name for p in path.parent.iterdir()] == ["manifest.json"]  # no temp file left

    def crash(*args):
        raise OSError("disk full")
    monkeypatch.setattr(mio.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        make_split(source(), "demo", 6, 6, seed=9).save(path)
    assert SplitManifest.load(path) == m  # the old file is intact
    assert [p.name for p in path.parent.iterdir()] == ["manifest.json"]


def test_check_source():
    s = source()
    m = make_split(s, "x", 5, 5, 1)
    m.check_source(source())
    with pytest.raises(ValueError, match="the data changed"):
        m.check_source(source(seed=1))
    images = s.images(np.arange(len(s))).copy()
    images[0, 0, 0, 0] ^= 1
    with pytest.raises(ValueError, match="fingerprint"):
        m.check_source(ArraySource(images, ids=s.ids))
    small = s.subset(s.ids[:50])
    m2 = SplitManifest("x", small.fingerprint(), 0, [1000, 1099], [1001], [], [])
    with pytest.raises(ValueError, match="target_members has 1 ids that toy"):
        m2.check_source(small)


def test_overlaps_and_empty_sets_are_refused():
    base = dict(source="x", source_fingerprint="f", seed=0, target_members=[1, 2], target_nonmembers=[3, 4],
                shadow_members=[5], shadow_nonmembers=[6])
    SplitManifest(**base)
    SplitManifest(**{**base, "shadow_members": [], "shadow_nonmembers": []})  # no shadow model
    cases = [({"target_nonmembers": [2, 3]}, "target members and non-members overlap"),
             ({"shadow_nonmembers": [5]}, "shadow members and non-members overlap"),
             ({"reference_members": [[7, 8], [9, 3]]}, "reference model 1"),
             ({"target_members": []}, "non-empty"),
             ({"shadow_members": []}, "both given or both empty"),
             ({"target_members": [1, 1]}, "more than once"),
             ({"target_members": "12"}, "list of image ids"),
             ({"source": None}, "strings")]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            SplitManifest(**{**base, **change})


def test_malformed_files(tmp_path):
    good = make_split(source(), "demo", 4, 4).save(tmp_path / "good.json")
    d = json.loads(good.read_text())
    files = {"garbage.json": "{not json", "list.json": "[1, 2]",
             "noformat.json": json.dumps({k: v for k, v in d.items() if k != "format"}),
             "nofield.json": json.dumps({k: v for k, v in d.items() if k != "target_members"}),
             "extra.json": json.dumps({**d, "colour": "blue"}),
             "badid.json": json.dumps({**d, "target_members": ["a"]}),
             "overlap.json": json.dumps({**d, "target_nonmembers": d["target_members"]})}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=name):
            SplitManifest.load(tmp_path / name)
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="not a readable"):
        SplitManifest.load(tmp_path / "binary.json")


BASE = dict(source="x", source_fingerprint="f", seed=0, target_members=[1, 2], target_nonmembers=[3, 4],
            shadow_members=[5], shadow_nonmembers=[6])


@pytest.mark.parametrize("change,message", [
    ({"target_members": [1, 2.5]}, "ids must be integers; manifest target_members holds float ids such as 2.5"),
    ({"target_members": [1, 2.0]}, "ids must be integers; manifest target_members holds float ids such as 2.0"),
    ({"shadow_members": [True]}, "ids must be integers; manifest shadow_members holds boolean ids such as True"),
    ({"target_nonmembers": [3, "4"]}, "ids must be integers; manifest target_nonmembers holds text ids such as '4'"),
    ({"target_nonmembers": [3, None]}, "manifest target_nonmembers holds NoneType ids such as None"),
    ({"reference_members": [[7], [8.5]]}, "ids must be integers; manifest reference_1 holds float ids such as 8.5"),
    ({"target_members": [1, 2 ** 63]}, "ids must fit in int64 (-2**63 to 2**63 - 1); manifest target_members holds "
                                       "9223372036854775808"),
    ({"target_members": [-2 ** 63 - 1]}, "ids must fit in int64 (-2**63 to 2**63 - 1); manifest target_members holds "
                                         "-9223372036854775809"),
    ({"target_members": [[1, 2]]}, "manifest: target_members must be a flat list of image ids, got nested lists"),
    ({"target_members": {"1": 1}}, "manifest: target_members must be a list of image ids, got dict"),
    ({"reference_members": 5}, "manifest: reference_members must be a list of id lists, one per reference model, "
                               "got int"),
    ({"reference_members": [5]}, "manifest: reference_0 must be a list of image ids, got int"),
    ({"seed": 1.5}, "manifest: seed must be a whole number >= 0, got 1.5"),
    ({"seed": 2.0}, "manifest: seed must be a whole number >= 0, got 2.0"),
    ({"seed": True}, "got True"),
    ({"seed": "1"}, "got '1'"),
    ({"seed": None}, "got None"),
    ({"seed": -1}, "got -1"),
])
def test_bad_ids_and_seeds_are_refused(tmp_path, change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SplitManifest(**{**BASE, **change})
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"format": "mimmia-split", **BASE, **change}))
    with pytest.raises(ValueError, match=re.escape(f"{path}: malformed split manifest (") + ".*" + re.escape(message)):
        SplitManifest.load(path)


def test_negative_and_extreme_ids_are_kept():
    m = SplitManifest(**{**BASE, "target_members": [-2 ** 63, -1], "target_nonmembers": [2 ** 63 - 1]})
    assert m.target_members == [-2 ** 63, -1] and m.ids("target_nonmembers").tolist() == [2 ** 63 - 1]
    assert SplitManifest(**{**BASE, "seed": np.int64(3)}).seed == 3


@pytest.mark.parametrize("text,message", [
    ("{not json", "a split manifest is JSON, but this file is not (Expecting property name"),
    ("", "a split manifest is JSON, but this file is not (Expecting value"),
    ("[1, 2]", "a split manifest is a JSON object, but this file holds a JSON array"),
    ('"manifest"', "holds a JSON string"),
    ("3", "holds a JSON number"),
    ("null", "holds a JSON null"),
    ("{}", "not a mimmia split manifest (missing format: mimmia-split)"),
    ('{"format": "mimmia-experiment"}', "not a mimmia split manifest (its format is 'mimmia-experiment', not "
                                        "'mimmia-split')"),
    (json.dumps({"format": "mimmia-split", **{k: v for k, v in BASE.items() if k not in ("seed", "shadow_members")}}),
     "malformed split manifest (it lacks seed, shadow_members); its keys are format, source, source_fingerprint, "
     "seed, target_members, target_nonmembers, shadow_members, shadow_nonmembers, reference_members"),
    (json.dumps({"format": "mimmia-split", **BASE, "colour": "blue", "age": 3}),
     "malformed split manifest (unknown keys age, colour); its keys are format, source"),
    (json.dumps({"format": "mimmia-split", **{k: v for k, v in BASE.items() if k != "seed"}, "colour": "blue"}),
     "malformed split manifest (it lacks seed; unknown keys colour); its keys are"),
    (json.dumps({"format": "mimmia-split", **BASE, "target_members": [1, float("nan")]}),
     "ids must be integers; manifest target_members holds float ids such as nan"),
])
def test_malformed_json(tmp_path, text, message):
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: .*{re.escape(message)}"):
        SplitManifest.load(path)


def test_manifest_paths(tmp_path):
    (tmp_path / "loop.json").symlink_to(tmp_path / "loop.json")
    with pytest.raises(FileNotFoundError, match=re.escape(f"split manifest {tmp_path / 'loop.json'}: a symlink loop")):
        SplitManifest.load(tmp_path / "loop.json")
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / 'gone.json'}: no such file or directory")):
        SplitManifest.load(tmp_path / "gone.json")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path} is a folder, not a split manifest (a JSON file)")):
        SplitManifest.load(tmp_path)


def test_make_split_checks_the_seed():
    for seed in (-1, 1.5, "3"):
        with pytest.raises(ValueError, match=re.escape(f"manifest: seed must be a whole number >= 0, got {seed!r}")):
            make_split(source(), "x", 5, 5, seed=seed)


def test_one_role_vocabulary():
    assert MODEL_ROLES == ("target", "shadow", "reference")
    assert CANDIDATE_SETS == ("target_members", "target_nonmembers", "shadow_members", "shadow_nonmembers")
    assert [set_label(s) for s in CANDIDATE_SETS] == [1, 0, 1, 0] and set_name("shadow", "members") == "shadow_members"
    assert [training_set(r) for r in ("target", "shadow", "reference_2", "shadow_nonmembers")] == \
        ["target_members", "shadow_members", "reference_2", "shadow_nonmembers"]
    assert reference_set(3) == "reference_3" and reference_folder(3) == "ref-3" and reference_index("ref-3") == 3
    assert reference_index("shadow") is None
    with pytest.raises(ValueError, match="unknown role"):
        training_set("ref-0")
