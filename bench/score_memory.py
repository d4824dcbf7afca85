"""Peak memory of one scoring run, for bench_cpu (run in a fresh process per size).

    python -m bench.score_memory IMAGES [MASKS]

Scores IMAGES synthetic images (made from their ids on demand, so the source
holds nothing) with a mae_tiny_28-shaped model on one CPU thread and prints one
JSON line: peak RSS before and after scoring, in MiB. Imports only mimmia_core.
"""
import json
import resource
import sys

import numpy as np
import torch

from mimmia_core.data import ImageSource
from mimmia_core.model import build_model, get_config
from mimmia_core.scoring import ScoreSpec, score_images


class SyntheticSource(ImageSource):
    def __init__(self, n: int, shape: tuple):
        self.ids, self.shape, self.name = np.arange(n, dtype=np.int64), shape, f"synthetic-{n}"

    def images(self, positions) -> np.ndarray:
        ids = self.ids[np.asarray(positions)]
        pixels = np.arange(int(np.prod(self.shape)), dtype=np.int64)
        return ((ids[:, None] * 2654435761 + pixels * 40503) % 251).astype(np.uint8).reshape(-1, *self.shape)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main(n: int, masks: int = 8):
    torch.set_num_threads(1)
    model = build_model(get_config("mae_tiny_28")).eval()
    c = model.config
    source = SyntheticSource(n, (c.img_size, c.img_size, c.in_chans))
    before = peak_rss_mib()
    scores = score_images(model, source, ScoreSpec(num_masks=masks))
    print(json.dumps({"images": n, "masks": masks, "peak_rss_mib": peak_rss_mib(), "rss_before_mib": before,
                      "mean_score": float(scores.per_mask.mean())}))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
