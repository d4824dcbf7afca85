"""One image and an attack's verdict: an upload loaded (saying what was converted) and scored the way
run_attack scored the candidates, and which members an attack catches or misses at its threshold."""
from dataclasses import dataclass

import numpy as np

from .attacks import check_images_fit, make_attack
from .data import ArraySource, load_image_bytes
from .scores import refuse_non_finite


def score_image(experiment, result, image, image_id: int, scorer) -> float:
    """The signal of `result`'s attack (higher = more member-like) for one image against the experiment's
    target, under the spec and aggregate run_attack used (result.spec: the attack's own distance, switched
    to a comparable one where the models normalise differently), so the score sits on the same scale as
    result's member and non-member scores. The same checks as run_attack: the image fits the target and
    the references, and the score is finite.

    image: one image as a source holds it (data.load_image_bytes gives one); image_id: its mask seed id (masks are a function of (seed, id))."""
    attack = make_attack(result.attack).bind(experiment)
    source = ArraySource(np.asarray(image)[None], ids=[int(image_id)], name="the uploaded image")
    refs = list(experiment.references) if attack.needs_references else []
    for model in (experiment.target, *refs):
        check_images_fit(model, source)
    s = np.asarray(attack.signal(experiment.target, source, refs, result.spec, scorer, result.aggregate), np.float64)
    if s.shape != (1,):
        raise ValueError(f"attack {attack.name} gave {s.shape} scores for one image")
    refuse_non_finite(s, f"attack {attack.name}", f" for model {experiment.target.path} on {source.name}")
    return float(s[0])


@dataclass
class Upload:
    image: np.ndarray    # uint8 (img_size, img_size, in_chans), as data.load_image_bytes gives it
    note: str | None     # how it was converted to fit the model (data.convert_mode's steps), None if it was not


def load_upload(data: bytes, img_size: int, in_chans: int, resize: bool = False) -> Upload:
    """data.load_image_bytes, with a note saying how the file was converted to the model's channels."""
    steps = []
    image = load_image_bytes(data, img_size, in_chans, resize=resize, steps=steps)  # refuses what cannot be read
    return Upload(image, f"The upload was converted: {'; '.join(steps)}." if steps else None)


@dataclass
class Verdicts:
    """An attack's call on the target's members at its shadow-learned threshold (score >= threshold: member)."""
    caught: np.ndarray   # member ids predicted members, most member-like first
    missed: np.ndarray   # member ids predicted non-members, least member-like (clearest miss) first
    threshold: float


def member_verdicts(result) -> Verdicts:
    """Which of the target's members `result`'s attack catches and which it misses. A result without a
    threshold (no shadow model) has no verdict: ValueError."""
    if result.threshold is None:
        raise ValueError(f"attack {result.attack} has no threshold (the experiment has no shadow model), "
                         f"so it predicts no member")
    scores = np.asarray(result.member_scores, np.float64)
    order = np.argsort(-scores, kind="stable")
    caught = scores[order] >= result.threshold
    return Verdicts(caught=np.asarray(result.member_ids)[order][caught],
                    missed=np.asarray(result.member_ids)[order][~caught][::-1], threshold=float(result.threshold))


__all__ = ["score_image", "Upload", "load_upload", "Verdicts", "member_verdicts"]
