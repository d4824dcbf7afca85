"""One image outside the experiment's sets (an upload), scored the way run_attack scored the candidates."""
import numpy as np

from .attacks import check_images_fit, make_attack
from .data import ArraySource
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


__all__ = ["score_image"]
