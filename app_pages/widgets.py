"""What several pages show the same way: the attacks' names, the headline attacks, skipped-attack
warnings, member/non-member colours and score histograms in natural units (mimmia_core.axes)."""
from dataclasses import dataclass

import numpy as np
import streamlit as st

from app_pages import cached, charts, scoring_panel
from app_pages.views import slider_range, slider_start
from mimmia_core.attacks import ATTACKS
from mimmia_core.axes import member_side, score_axis

MEMBER_COLOR, NONMEMBER_COLOR = "#d81b60", "#1e88e5"
THRESHOLD_COLOR = "#424242"
HEADLINE = ("paper", "calibrated")  # the paper's attack, and its calibration where references allow
ATTACK_LABELS = {name: cls.label for name, cls in ATTACKS.items()}


def label(attack: str) -> str:
    return ATTACKS[attack].label


def help_text(attack: str) -> str:
    return ATTACKS[attack].help


def headline_attacks(exp, among=None) -> list:
    """The paper attack, plus the calibrated one if the experiment can run it (Experiment.available_attacks);
    `among`: only those in this list."""
    available = exp.available_attacks()
    return [a for a in HEADLINE if a in available and (among is None or a in among)]


def warn_skipped(skipped: dict) -> None:
    """One warning per attack that could not run, with the reason."""
    for name, why in skipped.items():
        st.warning(f"{label(name)}: {why}")


def results(exp, exp_key: str, attacks, spec, aggregate) -> dict:
    """cached.attack_results, the skipped ones shown as warnings and what the core changed (e.g. a switch to
    pixel space for models that normalise differently) as notes; {attack: AttackResult}. Attacks whose
    scores are still missing are left out, under the offer to score them (or the job's progress)."""
    ran, skipped, pending = cached.attack_results(exp, exp_key, attacks, spec, aggregate)
    if pending is not None:
        waiting = [label(a) for a in attacks if a not in ran and a not in skipped]
        scoring_panel.show(pending, f"the {', '.join(waiting)} attack{'s' if len(waiting) > 1 else ''} at "
                                    f"these settings")
    warn_skipped(skipped)
    for note in dict.fromkeys(note for r in ran.values() for note in r.notes):
        st.info(note, icon=":material/info:")
    return ran


def headline_results(exp, exp_key: str, spec, aggregate, among=None) -> dict:
    """results() of headline_attacks(exp, among)."""
    return results(exp, exp_key, headline_attacks(exp, among), spec, aggregate)


@dataclass
class Natural:
    """A result on its attack's natural axis (axes.score_axis): every value is the score times the axis' sign."""
    axis: str                       # the axis title, with its direction
    sign: float                     # value = sign * score
    members: np.ndarray
    nonmembers: np.ndarray
    shadow_members: np.ndarray | None
    shadow_nonmembers: np.ndarray | None
    threshold: float | None         # the shadow's
    lower_is_member: bool           # a distance; else a score or PSNR (higher = member)


def natural(result) -> Natural:
    sign, axis = score_axis(result.attack, result.spec)
    shadow_m, shadow_n, threshold = (None if x is None else sign * x for x in
                                     (result.shadow_member_scores, result.shadow_nonmember_scores, result.threshold))
    return Natural(axis, sign, sign * result.member_scores, sign * result.nonmember_scores, shadow_m, shadow_n,
                   threshold, member_side(result.attack, result.spec) == "lower")


def threshold_slider(label: str, members, nonmembers, start, key: str, help: str | None = None) -> float:
    """A threshold slider over every value (views.slider_range), starting at `start` (views.slider_start)."""
    lo, hi, step = slider_range(members, nonmembers, [] if start is None else [start])
    return st.slider(label, lo, hi, slider_start(start, lo, hi), step, key=key, format="%.4g", help=help)


def member_histogram(result, title: str, markers=(), names=("members", "non-members")):
    """A histogram of a result's target members vs non-members on the attack's natural axis
    (axes.score_axis of result.spec), with the shadow threshold; markers: (score, label, colour), as scores."""
    n = natural(result)
    lines = [] if n.threshold is None else [(n.threshold, "shadow threshold", THRESHOLD_COLOR)]
    markers = [(n.sign * s, text, c) for s, text, c in markers]
    return charts.hist_figure({names[0]: (n.members, MEMBER_COLOR), names[1]: (n.nonmembers, NONMEMBER_COLOR)},
                              n.axis, lines=lines, markers=markers, title=title)
