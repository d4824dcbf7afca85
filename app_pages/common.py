"""What every dashboard page shares: the chosen experiment, the attack settings,
cached models and results, progress bars and error boxes.

Caching: models live in st.cache_resource (shared, never copied). Scores are
cached by mimmia_core's Scorer (in memory, and on disk in ScoreCache, keyed on
weight and data fingerprints); attack results and sweeps are memoised here on
explicit string keys (the experiment's fingerprint key and the spec tuple), so
no big array and no uploaded file is ever hashed by streamlit.
"""
import hashlib
import os
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import astuple, replace
from pathlib import Path

import streamlit as st

from mimmia_core.attacks import ATTACKS, run_attack, sweep
from mimmia_core.cache import ScoreCache
from mimmia_core.checkpoint import MissingSettingsError, load_model
from mimmia_core.hub import is_hub_name
from mimmia_core.model_ref import model_ref
from mimmia_core.paths import missing_path_reason
from mimmia_core.experiment import DEMO_DIR, load_demo_experiment, load_experiment, load_experiment_file
from mimmia_core.distances import AGGREGATES, DISTANCES
from mimmia_core.scorer import Scorer
from mimmia_core.scores import ScoreSpec

ATTACK_LABELS = {
    "paper": "paper (raw distance)",
    "calibrated": "calibrated (reference models)",
    "lira": "offline LiRA",
    "encodermi": "EncoderMI (embeddings)",
    "unmasked": "unmasked reconstruction",
}
ATTACK_HELP = {
    "paper": "Li et al. 2024: the reconstruction distance itself; a low distance means member.",
    "calibrated": "The target's distance relative to reference models that never saw the image "
                  "(log ratio per paired mask): removes per-image difficulty.",
    "lira": "Offline LiRA: how far below the references' distances the target's lies, in reference "
            "standard deviations.",
    "encodermi": "Baseline: how alike the encoder embeds augmented views of the image (no decoder).",
    "unmasked": "Baseline: plain reconstruction error with a single masked patch, over all patches.",
}
SCORE_NAMES = {"paper": "reconstruction distance", "calibrated": "calibrated score", "lira": "LiRA score",
               "encodermi": "view similarity", "unmasked": "unmasked reconstruction error"}
MEMBER_COLOR, NONMEMBER_COLOR = "#d81b60", "#1e88e5"
MEMO_SIZE = 128
ENV_EXPERIMENT = "MIMMIA_EXPERIMENT"


# --------------------------------------------------------------------------
# Which experiment
# --------------------------------------------------------------------------
def default_choice() -> tuple:
    """The experiment to open first: $MIMMIA_EXPERIMENT (a bundle folder laid out
    like assets/demo, or a JSON file of load_experiment arguments), else the demo."""
    env = os.environ.get(ENV_EXPERIMENT)
    if env:
        return (("kind", "json"), ("path", env)) if env.endswith(".json") else (("kind", "dir"), ("path", env))
    return (("kind", "demo"), ("path", str(DEMO_DIR)))


def current_choice() -> tuple:
    if "experiment_choice" not in st.session_state:
        st.session_state["experiment_choice"] = default_choice()
    return st.session_state["experiment_choice"]


def _load(choice: dict):
    kind = choice["kind"]
    if kind == "demo":
        return load_demo_experiment()
    if kind == "dir":
        path = Path(choice["path"])
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such folder")
        return load_demo_experiment(demo_dir=path)
    if kind == "json":
        return load_experiment_file(choice["path"])
    if kind == "paths":
        args = {k: v for k, v in choice.items() if k != "kind" and v}
        args["references"] = list(args.get("references", ()))
        return load_experiment(**args)
    raise ValueError(f"unknown experiment kind {kind!r}")


@st.cache_resource(show_spinner="Loading the experiment's models and data…", max_entries=4)
def load_cached(choice: tuple):
    """(experiment, key): the key names every model's weights and every image set,
    so results cached under it are valid for exactly this experiment."""
    exp = _load(dict(choice))
    scorer = get_scorer()
    parts = [scorer.fingerprint(m.model) for m in (exp.target, exp.shadow, *exp.references) if m is not None]
    parts += [f"{role}={s.fingerprint()}" for role, s in exp.sources().items()]
    return exp, hashlib.sha256(" ".join(parts).encode()).hexdigest()[:16]


def try_load(choice: tuple):
    """load_cached, with any failure turned into (None, message)."""
    try:
        return load_cached(choice), None
    except Exception as e:  # noqa: BLE001 -- every load failure becomes a message, never a traceback
        return None, error_text(e)


def experiment():
    """The chosen experiment and its key; stops the page with a clear error if it cannot be loaded."""
    choice = current_choice()
    loaded, err = try_load(choice)
    if loaded is None:
        st.error(f"The experiment could not be loaded: {err}")
        if dict(choice)["kind"] == "demo":
            st.info("The demo bundle lives in assets/demo. Rebuild it with `python -m mimmia_core build-demo`, "
                    "or open the Overview page and point the app at your own checkpoints and data.")
        st.stop()
    return loaded


def error_text(e: BaseException) -> str:
    """A failure in the dashboard's words: missing settings point at its own controls."""
    if isinstance(e, MissingSettingsError):
        reasons = "; ".join(f"{name}: {why}" for name, why in e.missing.items())
        example = "&".join(f"{name}=..." for name in e.missing)
        return (f"{e.shown}: cannot tell {', '.join(e.missing)} from the file ({reasons}). mimmia does "
                f"not guess settings that change the scores. Give them under **Architecture hints** on the Models "
                f"page, or add them to the checkpoint path in the experiment form: {e.shown}?{example}")
    text = str(e).strip() or type(e).__name__
    if isinstance(e, (ValueError, OSError, KeyError)):
        return text
    return f"{type(e).__name__}: {text}"


# --------------------------------------------------------------------------
# Attack settings (sidebar, shared by every page)
# --------------------------------------------------------------------------
def settings_sidebar() -> None:
    """The attack settings; their values stay when the page changes."""
    sb = st.sidebar
    sb.subheader("Attack settings")
    sb.slider("Mask ratio at attack time", 0.05, 0.95, 0.75, 0.05, key="mask_ratio",
              help="Fraction of patches hidden before the model reconstructs the image.")
    sb.slider("Masks per image (K)", 1, 32, 8, 1, key="num_masks",
              help="Each image is scored under K random masks; the distances are aggregated.")
    with sb.expander("More settings"):
        st.number_input("Mask seed", 0, 2**31 - 1, 0, 1, key="mask_seed",
                        help="Masks are a pure function of (seed, image id, mask index): scores are reproducible.")
        st.selectbox("Distance", DISTANCES, key="distance",
                      help="masked_mse: MSE over masked patches in the model's target space (MAE's loss).")
        st.selectbox("Aggregate over the K masks", AGGREGATES, key="aggregate")


def current_spec() -> ScoreSpec:
    s = st.session_state
    return ScoreSpec(mask_ratio=round(float(s.get("mask_ratio", 0.75)), 4), num_masks=int(s.get("num_masks", 8)),
                     seed=int(s.get("mask_seed", 0)), distance=s.get("distance", "masked_mse"))


def current_aggregate() -> str:
    return st.session_state.get("aggregate", "mean")


def spec_caption(spec: ScoreSpec, aggregate: str) -> str:
    return (f"mask ratio {spec.mask_ratio:g}, K = {spec.num_masks} masks ({aggregate}), seed {spec.seed}, "
            f"distance {spec.distance}")


# --------------------------------------------------------------------------
# Scoring, with progress bars
# --------------------------------------------------------------------------
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
def _memo() -> tuple:
    return OrderedDict(), threading.Lock()


def _memoised(key: tuple, compute):
    store, lock = _memo()
    with lock:
        if key in store:
            store.move_to_end(key)
            return store[key]
    value = compute()
    with lock:
        store[key] = value
        while len(store) > MEMO_SIZE:
            store.popitem(last=False)
    return value


def attack_result(exp, exp_key: str, attack: str, spec: ScoreSpec, aggregate: str):
    """run_attack, memoised on (experiment key, attack, spec, aggregate)."""
    def compute():
        with scoring_progress(f"Running the {ATTACK_LABELS.get(attack, attack)} attack"):
            return run_attack(attack, exp, spec, get_scorer(), aggregate=aggregate)
    return _memoised(("attack", exp_key, attack, astuple(spec), aggregate), compute)


def attack_results(exp, exp_key: str, attacks, spec: ScoreSpec, aggregate: str) -> tuple[dict, dict]:
    """({attack: AttackResult} for those that ran, {attack: reason} for those that could not)."""
    results, skipped = {}, {}
    for a in attacks:
        try:
            results[a] = attack_result(exp, exp_key, a, spec, aggregate)
        except Exception as e:  # noqa: BLE001 -- an attack the experiment cannot run is reported, not raised
            skipped[a] = error_text(e)
    return results, skipped


def available_attacks(exp) -> list:
    """The attacks this experiment supports (calibrated and LiRA need reference models)."""
    return [name for name, cls in ATTACKS.items() if len(exp.references) >= cls.min_references]


def _sweep_key(exp_key: str, ratios, attacks, spec: ScoreSpec, aggregate: str) -> tuple:
    return "sweep", exp_key, tuple(ratios), tuple(attacks), astuple(replace(spec, mask_ratio=0.5)), aggregate


def sweep_done(exp, exp_key: str, ratios, attacks, spec: ScoreSpec, aggregate: str) -> bool:
    """Whether this sweep costs no scoring: in memory, or every score it needs is cached (for the demo,
    the bundle ships its default sweep's scores)."""
    store, lock = _memo()
    with lock:
        if _sweep_key(exp_key, ratios, attacks, spec, aggregate) in store:
            return True
    scorer = get_scorer()
    pairs = [(exp.target, exp.members), (exp.target, exp.nonmembers)]
    pairs += [(exp.shadow, s) for s in (exp.shadow_members, exp.shadow_nonmembers) if exp.shadow and s is not None]
    if any(ATTACKS[a].needs_references for a in attacks):
        pairs += [(ref, source) for ref in exp.references for _, source in pairs]
    return all(scorer.is_cached(model, source, replace(spec, mask_ratio=float(r)))
               for r in ratios for model, source in pairs)


def sweep_image_masks(exp, n_ratios: int, spec: ScoreSpec) -> int:
    """Roughly how many image-masks a sweep scores: target, shadow and every reference on their candidates."""
    shadow = sum(len(s) for s in (exp.shadow_members, exp.shadow_nonmembers) if s is not None)
    per_ratio = (1 + len(exp.references)) * (len(exp.members) + len(exp.nonmembers) + shadow)
    return n_ratios * spec.num_masks * per_ratio


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
    return _memoised(_sweep_key(exp_key, ratios, attacks, spec, aggregate), compute)


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


def score_axis(attack: str, spec: ScoreSpec) -> tuple[float, str]:
    """(sign, label) to show an attack's scores in natural units: the paper attack as the
    distance itself (sign -1; PSNR in dB, sign +1), the others as they are (higher = member)."""
    if attack == "paper":
        if spec.distance == "psnr":
            return 1.0, "PSNR of the reconstruction, dB (higher = more member-like)"
        return -1.0, f"reconstruction distance, {spec.distance} (lower = more member-like)"
    if attack == "unmasked":
        return -1.0, "reconstruction error over all patches (lower = more member-like)"
    return 1.0, f"{ATTACK_LABELS.get(attack, attack)} score (higher = more member-like)"
