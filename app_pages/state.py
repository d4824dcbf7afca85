"""The session's state: which experiment is open (loaded once, cached by its fingerprint), the attack
settings in the sidebar, and failures in the dashboard's words."""
import os
from pathlib import Path

import streamlit as st

from mimmia_core.checkpoint import MissingSettingsError
from mimmia_core.experiment import DEMO_DIR, load_demo_experiment, load_experiment, load_experiment_file
from mimmia_core.distances import AGGREGATES, DISTANCES
from mimmia_core.scores import ScoreSpec

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
    """(experiment, key): the key is Experiment.fingerprint(), so results cached under it are valid for
    exactly this experiment."""
    exp = _load(dict(choice))
    return exp, exp.fingerprint()


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
        return (f"{e.shown}: cannot tell {', '.join(e.missing)} from the file ({reasons}). mimmia does "
                f"not guess settings that change the scores. Give them under **Architecture hints** on the Models "
                f"page, or add them to the checkpoint path in the experiment form: {e.shown}?{e.query}")
    text = str(e).strip() or type(e).__name__
    if isinstance(e, (ValueError, OSError, KeyError)):
        return text
    return f"{type(e).__name__}: {text}"


# --------------------------------------------------------------------------
# Attack settings (sidebar, shared by every page)
# --------------------------------------------------------------------------
def settings_sidebar(applies: bool = True) -> None:
    """The attack settings; their values stay when the page changes. On a page they do not apply to
    (applies=False) they are shown greyed out, with a line saying so: a widget left undrawn would lose its value."""
    sb = st.sidebar
    sb.subheader("Attack settings")
    if not applies:
        sb.caption("Not used on this page; they apply to the attack pages above.")
    sb.slider("Mask ratio at attack time", 0.05, 0.95, 0.75, 0.05, key="mask_ratio", disabled=not applies,
              help="Fraction of patches hidden before the model reconstructs the image.")
    sb.slider("Masks per image (K)", 1, 32, 8, 1, key="num_masks", disabled=not applies,
              help="Each image is scored under K random masks; the distances are aggregated.")
    with sb.expander("More settings"):
        st.number_input("Mask seed", 0, 2**31 - 1, 0, 1, key="mask_seed", disabled=not applies,
                        help="Masks are a pure function of (seed, image id, mask index): scores are reproducible.")
        st.selectbox("Distance", DISTANCES, key="distance", disabled=not applies,
                      help="masked_mse: MSE over masked patches in the model's target space (MAE's loss).")
        st.selectbox("Aggregate over the K masks", AGGREGATES, key="aggregate", disabled=not applies)


def current_spec() -> ScoreSpec:
    s = st.session_state
    return ScoreSpec(mask_ratio=round(float(s.get("mask_ratio", 0.75)), 4), num_masks=int(s.get("num_masks", 8)),
                     seed=int(s.get("mask_seed", 0)), distance=s.get("distance", "masked_mse"))


def current_aggregate() -> str:
    return st.session_state.get("aggregate", "mean")


def spec_caption(spec: ScoreSpec, aggregate: str) -> str:
    return (f"mask ratio {spec.mask_ratio:g}, K = {spec.num_masks} masks ({aggregate}), seed {spec.seed}, "
            f"distance {spec.distance}")
