"""What several pages show the same way: the attacks' names, the headline attacks, skipped-attack
warnings, member/non-member colours and score histograms in natural units (mimmia_core.axes)."""
import streamlit as st

from app_pages import cached, charts
from mimmia_core.attacks import ATTACKS
from mimmia_core.axes import score_axis

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
    pixel space for models that normalise differently) as notes; {attack: AttackResult}."""
    ran, skipped = cached.attack_results(exp, exp_key, attacks, spec, aggregate)
    warn_skipped(skipped)
    for note in dict.fromkeys(note for r in ran.values() for note in r.notes):
        st.info(note, icon=":material/info:")
    return ran


def headline_results(exp, exp_key: str, spec, aggregate, among=None) -> dict:
    """results() of headline_attacks(exp, among)."""
    return results(exp, exp_key, headline_attacks(exp, among), spec, aggregate)


def member_histogram(result, title: str, markers=(), names=("members", "non-members")):
    """A histogram of a result's target members vs non-members on the attack's natural axis
    (axes.score_axis of result.spec), with the shadow threshold; markers: (score, label, colour), as scores."""
    sign, axis = score_axis(result.attack, result.spec)
    lines = [] if result.threshold is None else [(sign * result.threshold, "shadow threshold", THRESHOLD_COLOR)]
    return charts.hist_figure({names[0]: (sign * result.member_scores, MEMBER_COLOR),
                               names[1]: (sign * result.nonmember_scores, NONMEMBER_COLOR)},
                              axis, lines=lines, markers=[(sign * s, text, c) for s, text, c in markers], title=title)
