"""Peak memory of one scoring run, for bench_cpu (run in a fresh process per size).

    python -m bench.score_memory IMAGES [MASKS]

Scores IMAGES synthetic images (made from their ids on demand, so the source
holds nothing) with a mae_tiny_28-shaped model on one CPU thread and prints one
JSON line, in MiB: the resident set before scoring, its largest value sampled after
every batch (the scoring working set, which the import-time peak cannot hide), and
the process's peak RSS. Imports only mimmia_core.
"""
import json
import resource
import sys

import numpy as np
import torch

from mimmia_core.data import ImageSource
from mimmia_core.config import get_config
from mimmia_core.model import build_model
from mimmia_core.scores import ScoreSpec, score_images


class SyntheticSource(ImageSource):
    def __init__(self, n: int, shape: tuple):
        self.ids, self.shape, self.name = np.arange(n, dtype=np.int64), shape, f"synthetic-{n}"

    def images(self, positions) -> np.ndarray:
        ids = self.ids[np.asarray(positions)]
        pixels = np.arange(int(np.prod(self.shape)), dtype=np.int64)
        return ((ids[:, None] * 2654435761 + pixels * 40503) % 251).astype(np.uint8).reshape(-1, *self.shape)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def main(n: int, masks: int = 8):
    torch.set_num_threads(1)
    model = build_model(get_config("mae_tiny_28")).eval()
    c = model.config
    source = SyntheticSource(n, (c.img_size, c.img_size, c.in_chans))
    before = rss_mib()
    during = [before]
    scores = score_images(model, source, ScoreSpec(num_masks=masks), progress=lambda done, total: during.append(rss_mib()))
    print(json.dumps({"images": n, "masks": masks, "rss_before_mib": before, "rss_scoring_mib": max(during),
                      "peak_rss_mib": peak_rss_mib(), "mean_score": float(scores.per_mask.mean())}))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
