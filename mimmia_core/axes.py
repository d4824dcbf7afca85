"""How an attack's scores are shown: on which axis, under which name, in which direction.

Every attack's signal is "higher = more member-like" (attacks.Attack). For display, the attacks that
score a distance are shown in the distance's natural units instead: the signal times `sign`, so a chart
reads "lower distance = member" as in the paper. The dashboard multiplies by `sign` and never decides
a direction itself.
"""
from .attacks import make_attack
from .distances import HIGHER_IS_CLOSER, distance_sign

SCORE_NAMES = {"paper": "reconstruction distance", "calibrated": "calibrated score", "lira": "LiRA score",
               "encodermi": "view similarity", "unmasked": "unmasked reconstruction error"}


def axis_units(attack, spec) -> tuple[float, str]:
    """(sign, what the axis shows) for an attack's scores in natural units: the paper attack as the
    distance itself (sign -1; PSNR in dB, sign +1), unmasked as its error (sign -1), the others as they are
    (sign +1, higher = member). `spec`: the ScoreSpec the scores were computed with (AttackResult.spec)."""
    attack = make_attack(attack)
    if attack.name in ("paper", "unmasked"):  # the signal is distance_sign * distance: undo it
        what = "PSNR of the reconstruction, dB" if spec.distance == "psnr" else (
            f"reconstruction distance, {spec.distance}" if attack.name == "paper"
            else f"reconstruction error over all patches, {spec.distance}")
        return distance_sign(spec.distance), what
    return 1.0, f"{attack.label} score"


def member_side(attack, spec) -> str:
    """On the natural axis: "lower" where images at or below a threshold are called members (the distances),
    "higher" where those at or above are (PSNR, and the attacks shown as scores)."""
    return "lower" if axis_units(attack, spec)[0] < 0 else "higher"


def score_axis(attack, spec) -> tuple[float, str]:
    """(sign, axis label): axis_units with the direction, "... (lower = more member-like)"."""
    sign, what = axis_units(attack, spec)
    return sign, f"{what} ({member_side(attack, spec)} = more member-like)"


def member_reading(attack, spec) -> str:
    """How to read score_axis in a few words: "lower = member", and for PSNR why it is higher."""
    side = member_side(attack, spec)
    if make_attack(attack).name in ("paper", "unmasked") and spec.distance in HIGHER_IS_CLOSER:
        return f"PSNR is higher for a closer reconstruction, so here {side} = member"
    return f"{side} = member"


def score_name(attack) -> str:
    """What one of the attack's scores is called: "reconstruction distance", "LiRA score", ..."""
    attack = make_attack(attack)
    return SCORE_NAMES.get(attack.name, f"{attack.label} score")


__all__ = ["axis_units", "score_axis", "member_side", "member_reading", "score_name", "SCORE_NAMES"]
