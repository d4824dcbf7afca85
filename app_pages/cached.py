"""The dashboard's caches around the core, with progress bars.

Models live in st.cache_resource (shared, never copied). Scores are cached by mimmia_core's Scorer
(in memory, and on disk in ScoreCache, keyed on weight and data fingerprints); attack results and
sweeps are memoised here on explicit keys (Experiment.fingerprint() and the spec tuple), so no big
array and no uploaded file is ever hashed by streamlit. What is computed, and whether a sweep still
needs scoring, the core decides (attacks.run_attack, attacks.sweep, plan.missing_scores,
image_score.score_image).
"""
import os
import threading
from contextlib import contextmanager
from dataclasses import astuple, dataclass, replace
from pathlib import Path

import streamlit as st

from app_pages.state import error_text
from mimmia_core.attacks import make_attack, run_attack, sweep
from mimmia_core.cache import ScoreCache
from mimmia_core.checkpoint import load_model
from mimmia_core.hub import is_hub_name
from mimmia_core.image_score import score_image
from mimmia_core.memo import LRUMemo
from mimmia_core.model_ref import model_ref
from mimmia_core.paths import missing_path_reason
from mimmia_core.plan import Missing, missing_scores
from mimmia_core.scorer import Scorer
from mimmia_core.scores import ScoreSpec
from mimmia_core.scoring_job import ScoringJob, image_masks_per_second, stages_of

MEMO_SIZE = 128
AUTO_SCORE_ENV = "MIMMIA_AUTO_SCORE_SECONDS"  # scoring expected to take at most this long (default 3 s) runs
# at once; longer work is offered first, with its cost


def auto_seconds() -> float:
    text = os.environ.get(AUTO_SCORE_ENV, "3")
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"${AUTO_SCORE_ENV} must be a number of seconds, got {text!r}") from None
_progress = threading.local()  # the progress callback of the session thread that is scoring now


def _report(done: int, total: int) -> None:
    callback = getattr(_progress, "callback", None)
    if callback is not None:
        callback(done, total)


@st.cache_resource
def get_scorer() -> Scorer:
    """One Scorer for every session: in-memory memo plus the on-disk ScoreCache
    ($MIMMIA_CACHE or ~/.cache/mimmia). Each model runs on its own device."""
    return Scorer(cache=ScoreCache(), progress=_report)


@contextmanager
def scoring_progress(what: str):
    """A progress bar for the scoring done inside the block (shown only if scoring happens)."""
    slot = st.empty()
    _progress.callback = lambda done, total: slot.progress(min(done / max(total, 1), 1.0),
                                                           text=f"{what}: {done}/{total} images")
    try:
        yield
    finally:
        _progress.callback = None
        slot.empty()


@st.cache_resource
def _memo() -> LRUMemo:
    return LRUMemo(MEMO_SIZE)


@st.cache_resource
def _jobs() -> dict:
    """Scoring jobs by key, shared by every session (two viewers asking for the same scores share one job)."""
    return {}


@dataclass(frozen=True)
class Pending:
    """Scoring a page needs before it can show some of its results: the job's key, its stages and cost."""
    key: tuple
    stages: list
    seconds: float  # estimated on this machine

    @property
    def image_masks(self) -> int:
        return sum(missing.image_masks for _, missing in self.stages)

    def job(self):
        return _jobs().get(self.key)

    def start(self):
        """Start (or restart) the job in the background."""
        job = self.job()
        if job is None or not job.progress().running:
            _jobs()[self.key] = ScoringJob(get_scorer(), self.stages).start()


def scoring_rate(exp, exp_key: str, spec: ScoreSpec) -> float:
    """Image-masks per second of the target at this mask ratio and K on this machine, measured once."""
    return _memo().get_or_compute(("rate", exp_key, spec.mask_ratio, spec.num_masks),
                                  lambda: image_masks_per_second(get_scorer(), exp.target, exp.members, spec))


def plan_scoring(exp, exp_key: str, key: tuple, plans, spec: ScoreSpec) -> Pending | None:
    """None when nothing is missing or it is cheap enough to score now (done here, one progress bar); else
    the Pending job. plans: (label, plan.Missing) in the order their results should appear."""
    stages = [(label, m) for label, m in stages_of(plans) if m]
    if not stages:
        return None
    job = _jobs().get(key)
    total = sum(m.image_masks for _, m in stages)
    seconds = total / scoring_rate(exp, exp_key, spec)
    if (job is not None and job.progress().running) or seconds > auto_seconds():
        return Pending(key, stages, seconds)
    slot = st.empty()
    done = ScoringJob(get_scorer(), stages).run(
        on_progress=lambda p: slot.progress(min(p.done / max(p.total, 1), 1.0),
                                            text=f"Scoring {p.done:,}/{p.total:,} image-masks"))
    slot.empty()
    if done.error:
        raise RuntimeError(done.error)
    return None


def _attack_key(exp_key, attack, spec, aggregate) -> tuple:
    return "attack", exp_key, attack, astuple(spec), aggregate


def attack_result(exp, exp_key: str, attack: str, spec: ScoreSpec, aggregate: str):
    """run_attack, memoised on (experiment key, attack, spec, aggregate)."""
    def compute():
        with scoring_progress(f"Running the {make_attack(attack).label} attack"):
            return run_attack(attack, exp, spec, get_scorer(), aggregate=aggregate)
    return _memo().get_or_compute(_attack_key(exp_key, attack, spec, aggregate), compute)


def attack_results(exp, exp_key: str, attacks, spec: ScoreSpec, aggregate: str) -> tuple[dict, dict, Pending | None]:
    """({attack: AttackResult} for those that ran, {attack: reason} for those that could not, the scoring
    the others still need: None if none). Scoring that takes more than auto_seconds() is never started here."""
    results, skipped, plans = {}, {}, []
    for a in attacks:
        try:
            if _attack_key(exp_key, a, spec, aggregate) not in _memo():
                plans.append((a, missing_scores(exp, get_scorer(), [spec.mask_ratio], [a], spec)))
        except Exception as e:  # noqa: BLE001 -- an attack the experiment cannot run is reported, not raised
            skipped[a] = error_text(e)
    try:
        pending = plan_scoring(exp, exp_key, ("attacks", exp_key, astuple(spec)), plans, spec)
    except Exception as e:  # noqa: BLE001 -- scoring that fails is reported for every attack that needed it
        return results, {**skipped, **{a: error_text(e) for a, m in plans if m}}, None
    waiting = set() if pending is None else {a for a, m in plans if not all_cached(m)}
    for a in attacks:
        if a in skipped or a in waiting:
            continue
        try:
            results[a] = attack_result(exp, exp_key, a, spec, aggregate)
        except Exception as e:  # noqa: BLE001
            skipped[a] = error_text(e)
    return results, skipped, pending


def all_cached(missing: Missing) -> bool:
    """Whether every score of `missing` is cached by now."""
    return all(get_scorer().is_cached(*item) for item in missing.items)


def upload_score(exp, result, image, image_id: int) -> float:
    """image_score.score_image (run_attack's checks and spec) for one uploaded image, with a progress bar."""
    with scoring_progress(f"Scoring the upload ({make_attack(result.attack).label})"):
        return score_image(exp, result, image, image_id, get_scorer())


def sweep_plans(exp, ratios, attacks, spec: ScoreSpec) -> list:
    """(label, Missing) per mask ratio: what each ratio of a sweep still needs (plan.missing_scores)."""
    return [(f"mask ratio {r:g}", missing_scores(exp, get_scorer(), [r], attacks, spec)) for r in ratios]


def sweep_rows(exp, exp_key: str, ratios, attacks, spec: ScoreSpec, aggregate: str) -> list:
    """attacks.sweep over mask ratios whose scores are all cached, memoised."""
    key = ("sweep", exp_key, tuple(ratios), tuple(attacks), astuple(replace(spec, mask_ratio=0.5)), aggregate)
    return _memo().get_or_compute(key, lambda: sweep(exp, list(ratios), list(attacks), spec, get_scorer(),
                                                     aggregate=aggregate))


# --------------------------------------------------------------------------
# Models opened on the Models page
# --------------------------------------------------------------------------
@st.cache_resource(show_spinner="Loading the checkpoint…", max_entries=8)
def _load_model_cached(path: str, stamp: str, hints: tuple):
    return load_model(path, "cpu", config=dict(hints) or None)


def load_model_by_path(path: str, hints: tuple = ()):
    """A checkpoint ('PATH' or 'PATH?key=value&...'), cached on (path, modification time, size, settings) so a
    rewritten file is reloaded. hints: (name, value) pairs of MAEConfig fields the file cannot tell."""
    ref = model_ref(path.strip(), dict(hints))
    if is_hub_name(ref.path):  # hf:ORG/NAME or timm:NAME, resolved in the Hugging Face cache
        return _load_model_cached(ref.path, "hub", tuple(sorted(ref.config.items())))
    p = Path(ref.path).expanduser()
    try:
        st_ = p.stat()
    except OSError as e:
        raise FileNotFoundError(f"{p}: {missing_path_reason(p)}") from e
    settings = tuple(sorted(ref.config.items()))
    return _load_model_cached(str(p), f"{st_.st_mtime_ns}-{st_.st_size}", settings)
