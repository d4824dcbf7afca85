"""Distributed scoring (mimmia_core/distributed.py): the shard rule and the merge by id, and the CLI under
torchrun with 2 gloo processes on CPU: bit-identical outputs and cache to one process, and a failing rank
that fails the job, names itself, and leaves nothing in the cache."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mimmia_core.checkpoint import save_checkpoint
from mimmia_core.cli import main
from mimmia_core.config import MAEConfig
from mimmia_core.data import ArraySource
from mimmia_core.distributed import merge_shards, rank_and_world, shard, share, sharded
from mimmia_core.manifest import make_split, reference_folder
from mimmia_core.model import build_model

REPO = Path(__file__).resolve().parent.parent
TINY = MAEConfig(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32,
                 decoder_depth=1, decoder_num_heads=2, mlp_ratio=2.0, mean=(0.5,), std=(0.5,))


def source(n: int) -> ArraySource:
    images = np.random.default_rng(0).integers(0, 256, (n, 16, 16, 1), dtype=np.uint8)
    return ArraySource(images, ids=np.arange(n) * 7 + 3, name="rand")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> dict:
    """Random images (npz, 26 of them), a split manifest (5 + 5 per model, 2 references) and untrained MAEs."""
    root = tmp_path_factory.mktemp("dist")
    src = source(26)
    np.savez(root / "data.npz", images=src.images(np.arange(26)), ids=src.ids)
    make_split(src, f"npz:{root / 'data.npz'}", n_members=5, n_nonmembers=5, n_references=2,
               n_reference_members=3).save(root / "manifest.json")
    names = ["target", "shadow", reference_folder(0), reference_folder(1)]
    paths = {name: save_checkpoint(build_model(TINY, seed=i), root / "models" / name, {}) for i, name in
             enumerate(names)}
    return dict(root=root, data=root / "data.npz", manifest=root / "manifest.json", **paths,
                refs=[paths[n] for n in names[2:]])


def torchrun(args: list, cwd: Path) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node 2 -m mimmia_core ARGS`, one CPU thread per rank."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "mimmia_core", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def two_ranks(args: list, cwd: Path) -> list:
    """[(exit code, stderr)] of ranks 0 and 1 of `mimmia ARGS`, started with the environment torchrun gives
    them (no agent that stops the others when one exits)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "WORLD_SIZE": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    procs = [subprocess.Popen([sys.executable, "-m", "mimmia_core", *map(str, args)], cwd=cwd, text=True,
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stderr=subprocess.PIPE)
             for r in (0, 1)]
    return [(p.wait(timeout=300), p.stderr.read()) for p in procs]


def cache_arrays(folder: Path) -> dict:
    """{entry name: {array name: array}} of a score cache folder."""
    out = {}
    for path in sorted(folder.glob("*.npz")):
        with np.load(path) as z:
            out[path.name] = {n: z[n] for n in z.files}
    return out


def assert_same_cache(a: Path, b: Path) -> None:
    one, two = cache_arrays(a), cache_arrays(b)
    assert one and sorted(one) == sorted(two)
    for name, arrays in one.items():
        assert sorted(arrays) == sorted(two[name])
        for k, v in arrays.items():
            np.testing.assert_array_equal(two[name][k], v)


def test_shards_are_positions_r_mod_w():
    src = source(7)
    parts = [shard(src, r, 3) for r in range(3)]
    assert [p.ids.tolist() for p in parts] == [[3, 24, 45], [10, 31], [17, 38]]
    np.testing.assert_array_equal(parts[1].images([0, 1]), src.images([1, 4]))
    with pytest.raises(ValueError, match="rank"):
        shard(src, 3, 3)
    assert share(list(range(5)), 1, 2) == [1, 3] and share(list(range(1)), 1, 2) == []  # a farm's models


def test_merge_places_each_shard_by_id():
    src = source(5)  # ids 3, 10, 17, 24, 31
    parts = [{"ids": np.array([3, 17, 31]), "v": np.array([[0.0, 2.0, 4.0], [5.0, 7.0, 9.0]])},
             {"ids": np.array([24, 10]), "v": np.array([[3.0, 1.0], [8.0, 6.0]])}]  # any order within a shard
    merged = merge_shards(parts, src)
    np.testing.assert_array_equal(merged["ids"], src.ids)
    np.testing.assert_array_equal(merged["v"], [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    with pytest.raises(RuntimeError, match="once each"):
        merge_shards([parts[0], parts[0]], src)


def test_without_a_process_group_nothing_is_sharded():
    src = source(4)
    assert rank_and_world() == (0, 1)
    assert sharded(lambda s: {"ids": s.ids, "n": np.array([len(s)])}, src)["n"].tolist() == [4]


def test_score_on_two_ranks_is_one_process_bit_for_bit(experiment, tmp_path):
    common = ["--model", experiment["target"], "--data", f"npz:{experiment['data']}", "--num-masks", "3",
              "--seed", "4", "--device", "cpu"]
    assert main(list(map(str, ["score", *common, "--out", tmp_path / "one.csv", "--cache-dir", tmp_path / "c1"]))) == 0
    run = torchrun(["score", *common, "--out", tmp_path / "two.csv", "--cache-dir", tmp_path / "c2"], tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("scored 26 images") == 1  # rank 0 only
    one, two = (tmp_path / "one.csv").read_text(), (tmp_path / "two.csv").read_text()
    assert len(one.splitlines()) == 27 and one == two  # exact reprs of every per-mask float
    assert_same_cache(tmp_path / "c1", tmp_path / "c2")


def test_attack_on_two_ranks_is_one_process_bit_for_bit(experiment, tmp_path):
    models = ["--target", experiment["target"], "--shadow", experiment["shadow"],
              *[a for r in experiment["refs"] for a in ("--reference", r)]]
    common = [*models, "--manifest", experiment["manifest"], "--num-masks", "2", "--device", "cpu"]
    assert main(list(map(str, ["attack", *common, "--out", tmp_path / "one", "--cache-dir", tmp_path / "c1"]))) == 0
    run = torchrun(["attack", *common, "--out", tmp_path / "two", "--cache-dir", tmp_path / "c2"], tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("wrote ") == 1
    one, two = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("one", "two"))
    assert {r["attack"] for r in one["results"]} >= {"paper", "calibrated", "lira", "encodermi"}
    assert one["results"] == two["results"]
    assert (tmp_path / "one" / "scores.csv").read_text() == (tmp_path / "two" / "scores.csv").read_text()
    assert_same_cache(tmp_path / "c1", tmp_path / "c2")


def test_a_failing_rank_fails_the_job_and_caches_nothing(experiment, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, name in enumerate("abcd"):  # b.png, at position 1, is in rank 1's shard
        side = 12 if name == "b" else 16
        Image.fromarray(np.full((side, side), 40 * i, np.uint8)).save(folder / f"{name}.png")
    args = ["score", "--model", experiment["target"], "--data", f"folder:{folder}", "--num-masks", "2",
            "--device", "cpu", "--out", tmp_path / "s.csv", "--cache-dir", tmp_path / "c"]
    (code0, err0), (code1, err1) = two_ranks(args, tmp_path)
    assert (code0, code1) == (2, 2)  # every rank exits with the failed rank's code (2: a bad input)
    assert [line for line in err0.splitlines() if "mimmia" in line] == [f"mimmia score: error: rank 1 failed: {folder / 'b.png'} is 12x12 pixels but "
                                 f"a.png is 16x16; all images must have one size (or pass resize=(height, width))"]
    assert err1 == ""  # rank 1 is silent: rank 0 says why
    assert not (tmp_path / "s.csv").exists()
    assert not list((tmp_path / "c").glob("*.npz"))
    run = torchrun(args, tmp_path)  # under torchrun itself
    assert run.returncode != 0 and f"rank 1 failed: {folder / 'b.png'} is 12x12" in run.stderr


def test_rank_0_failing_before_scoring_stops_the_ranks_that_score(experiment, tmp_path):
    """Rank 0 refuses --out (a folder, for score) before any scoring; rank 1, which checks no --out, is in its
    first exchange by then, and gets the failure there."""
    (code0, err0), (code1, err1) = two_ranks(["score", "--model", experiment["target"], "--data",
                                              f"npz:{experiment['data']}", "--num-masks", "2", "--device", "cpu",
                                              "--out", tmp_path, "--cache-dir", tmp_path / "c"], tmp_path)
    assert (code0, code1) == (2, 2)
    assert err0.startswith(f"mimmia score: error: rank 0 failed: --out {tmp_path} is a folder; give a file name")
    assert err1 == ""
    assert not list((tmp_path / "c").glob("*.npz"))
