"""The dashboard's caches around the core, with progress bars.

Models live in st.cache_resource (shared, never copied). Scores are cached by mimmia_core's Scorer
(in memory, and on disk in ScoreCache, keyed on weight and data fingerprints); attack results and
sweeps are memoised here on explicit keys (Experiment.fingerprint() and the spec tuple), so no big
array and no uploaded file is ever hashed by streamlit. What is computed, and whether a sweep still
needs scoring, the core decides (attacks.run_attack, attacks.sweep, plan.missing_scores,
image_score.score_image).
"""
import threading
from contextlib import contextmanager
from dataclasses import astuple, replace
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

MEMO_SIZE = 128
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
    passes = [0]

    def show(done, total):
        if done <= 0 or done < show.last:
            passes[0] += 1
        show.last = done
        slot.progress(min(done / max(total, 1), 1.0),
                      text=f"{what}: scoring pass {max(passes[0], 1)}, {done}/{total} images")
    show.last = 0
    _progress.callback = show
    try:
        yield show
    finally:
        _progress.callback = None
        slot.empty()


@st.cache_resource
def _memo() -> LRUMemo:
    return LRUMemo(MEMO_SIZE)


def attack_result(exp, exp_key: str, attack: str, spec: ScoreSpec, aggregate: str):
    """run_attack, memoised on (experiment key, attack, spec, aggregate)."""
    def compute():
        with scoring_progress(f"Running the {make_attack(attack).label} attack"):
            return run_attack(attack, exp, spec, get_scorer(), aggregate=aggregate)
    return _memo().get_or_compute(("attack", exp_key, attack, astuple(spec), aggregate), compute)


def attack_results(exp, exp_key: str, attacks, spec: ScoreSpec, aggregate: str) -> tuple[dict, dict]:
    """({attack: AttackResult} for those that ran, {attack: reason} for those that could not)."""
    results, skipped = {}, {}
    for a in attacks:
        try:
            results[a] = attack_result(exp, exp_key, a, spec, aggregate)
        except Exception as e:  # noqa: BLE001 -- an attack the experiment cannot run is reported, not raised
            skipped[a] = error_text(e)
    return results, skipped


def upload_score(exp, result, image, image_id: int) -> float:
    """image_score.score_image (run_attack's checks and spec) for one uploaded image, with a progress bar."""
    with scoring_progress(f"Scoring the upload ({make_attack(result.attack).label})"):
        return score_image(exp, result, image, image_id, get_scorer())


def _sweep_key(exp_key: str, ratios, attacks, spec: ScoreSpec, aggregate: str) -> tuple:
    return "sweep", exp_key, tuple(ratios), tuple(attacks), astuple(replace(spec, mask_ratio=0.5)), aggregate


def sweep_missing(exp, exp_key: str, ratios, attacks, spec: ScoreSpec, aggregate: str) -> Missing:
    """The scores this sweep still needs (plan.missing_scores); none when its rows are memoised here. For
    the demo, the bundle ships its default sweep's scores."""
    if _sweep_key(exp_key, ratios, attacks, spec, aggregate) in _memo():
        return Missing(())
    return missing_scores(exp, get_scorer(), ratios, attacks, spec)


def sweep_rows(exp, exp_key: str, ratios, attacks, spec: ScoreSpec, aggregate: str) -> list:
    """attacks.sweep over the mask ratios, memoised; one progress bar for the whole grid."""
    def compute():
        slot, state = st.empty(), dict(done=0, total=1, label="")

        def draw(detail=""):
            slot.progress(min(state["done"] / max(state["total"], 1), 1.0),
                          text=f"Mask-ratio sweep {state['done']}/{state['total']}: {state['label']}{detail}")

        def progress(done, total, label):
            state.update(done=done, total=total, label=label)
            draw()
        _progress.callback = lambda done, total: draw(f" (scoring {done}/{total} images)")
        try:
            return sweep(exp, list(ratios), list(attacks), spec, get_scorer(), progress=progress, aggregate=aggregate)
        finally:
            _progress.callback = None
            slot.empty()
    return _memo().get_or_compute(_sweep_key(exp_key, ratios, attacks, spec, aggregate), compute)


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
