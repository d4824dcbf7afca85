"""A scoring job: the scores a run still needs (plan.Missing), scored in stages, with one progress
count over the whole job, an ETA, and cancellation.

Stages are what a caller can show as soon as they are done (the paper attack's scores, then the
references' for the calibrated attacks; one mask ratio of a sweep). A job runs in the caller's thread
(`run`) or in its own (`start`); `cancel` stops it at the next batch. The Scorer stores a pass only
when it is complete, so a cancelled or failed job leaves nothing partial in any cache.
"""
import threading
import time
from dataclasses import dataclass

from .plan import Missing
from .scores import score_distances


class Cancelled(Exception):
    """Raised inside a scoring pass when its job is cancelled."""


@dataclass(frozen=True)
class JobProgress:
    done: int                # image-masks scored
    total: int               # image-masks the job scores
    stages_done: int
    stages: int
    elapsed_s: float
    running: bool
    cancelled: bool
    error: str | None

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the job's own pace so far; None before its first image-mask."""
        return None if self.done <= 0 else self.elapsed_s * (self.total - self.done) / self.done

    @property
    def finished(self) -> bool:
        return self.stages_done == self.stages and self.error is None and not self.cancelled


def image_masks_per_second(scorer, loaded, source, spec, images: int = 16) -> float:
    """This machine's scoring speed for (model, spec), measured on `images` of source (nothing cached)."""
    part = source.subset(source.ids[:images], name=f"{source.name}[:{images}]")
    start = time.perf_counter()
    score_distances(loaded.require_decoder(), part, spec, batch_size=scorer.batch_size, device=scorer.device,
                    precision=scorer.precision)
    return len(part) * spec.num_masks / max(time.perf_counter() - start, 1e-6)


class ScoringJob:
    """Score `stages` (a list of (label, plan.Missing)) with `scorer`, one stage after the other."""

    def __init__(self, scorer, stages):
        self.scorer = scorer
        self.stages = [(label, missing) for label, missing in stages if missing]
        self.total = sum(missing.image_masks for _, missing in self.stages)
        self._done, self._stages_done, self._error = 0, 0, None
        self._cancel, self._running = threading.Event(), False
        self._started = None
        self._lock = threading.Lock()

    def progress(self) -> JobProgress:
        with self._lock:
            elapsed = 0.0 if self._started is None else time.perf_counter() - self._started
            return JobProgress(self._done, self.total, self._stages_done, len(self.stages), elapsed,
                               self._running, self._cancel.is_set(), self._error)

    def cancel(self) -> None:
        self._cancel.set()

    def start(self) -> "ScoringJob":
        """Run in a daemon thread; returns at once."""
        with self._lock:
            self._running = True
        threading.Thread(target=self.run, name="mimmia-scoring-job", daemon=True).start()
        return self

    def run(self, on_progress=None) -> JobProgress:
        """Score every stage here; on_progress(JobProgress) after each batch. Returns the last progress."""
        with self._lock:
            self._running, self._started = True, time.perf_counter()
        try:
            for _, missing in self.stages:
                for model, source, spec in missing.items:
                    self._score(model, source, spec, on_progress)
                with self._lock:
                    self._stages_done += 1
        except Cancelled:
            pass
        except Exception as e:  # noqa: BLE001 -- a failed job reports its reason; the caller shows it
            with self._lock:
                self._error = str(e) or type(e).__name__
        finally:
            with self._lock:
                self._running = False
        return self.progress()

    def _score(self, model, source, spec, on_progress) -> None:
        base = self._done

        def tick(done_images, _total):
            if self._cancel.is_set():
                raise Cancelled
            with self._lock:
                self._done = base + done_images * spec.num_masks
            if on_progress is not None:
                on_progress(self.progress())
        self.scorer.scores(model, source, spec, progress=tick)
        with self._lock:
            self._done = base + len(source) * spec.num_masks


def stages_of(plans) -> list:
    """[(label, Missing)] from (label, Missing) pairs, each stage without what an earlier one scores."""
    seen, stages = set(), []
    for label, missing in plans:
        items = tuple(t for t in missing.items if (id(t[0]), id(t[1]), t[2]) not in seen)
        seen.update((id(m), id(s), spec) for m, s, spec in items)
        stages.append((label, Missing(items)))
    return stages


__all__ = ["Cancelled", "JobProgress", "ScoringJob", "image_masks_per_second", "stages_of"]
