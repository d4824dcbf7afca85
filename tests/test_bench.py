"""The benchmarks run and their agreement checks hold (ours vs transformers on identical
weights); their timings are printed, never asserted."""
import json

import pytest

pytest.importorskip("transformers")
from bench import bench_cpu, bench_gpu, bench_train  # noqa: E402


def json_lines(out: str) -> list:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_bench_cpu_quick(capsys):
    bench_cpu.main(["--quick", "--no-memory", "--threads", "1"])
    tables = json_lines(capsys.readouterr().out)
    assert [t["shape"] for t in tables] == ["mae_tiny_28", "vit_b16_224"]
    for t in tables:
        assert t["gflop_per_unit"] > 0 and t["ceiling_rate"] > 0
        assert t["threads"] == 1 and t["paired_ratio"] > 0 and t["load_before"] >= 0  # the in-run ratio, with the load
        diffs = {r["variant"]: float(r["note"].rsplit(" ", 1)[1]) for r in t["rows"]}
        assert all(d <= 1e-4 for name, d in diffs.items() if "bf16" not in name)
    vit_b = tables[1]["gflop_per_unit"]
    assert 17 < vit_b < 20  # ViT-B/16 MAE at mask 0.75: about 18.8 GFLOP of products per image-mask


def test_bench_train_quick(capsys):
    bench_train.main(["--quick", "--threads", "1"])
    (t,) = json_lines(capsys.readouterr().out)
    assert {r["variant"] for r in t["rows"]} == {"ours", "hf"}
    losses = {r["variant"]: r["note"].rsplit(" ", 1)[1] for r in t["rows"]}
    assert losses["ours"] == losses["hf"]


def test_bench_gpu_smoke(capsys):
    bench_gpu.main(["--smoke"])
    out = capsys.readouterr().out
    checks = json.loads(out.split("checks: ", 1)[1].splitlines()[0])
    assert checks["ours_fp32_vs_hf_fp32_max_rel"] < 1e-4 and checks["ours_bf16_vs_fp32_corr"] > 0.99
    (t,) = json_lines(out)
    assert {"ours shared patch embedding, N=2", "ours shared patch embedding, N=4"} <= {r["variant"] for r in t["rows"]}
