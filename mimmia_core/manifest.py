"""Split manifests: which image ids each model was (and was not) trained on.

A manifest names the data source, its fingerprint and the seed, so an attack
run can be reproduced exactly and run against the same data again.

Roles, the one vocabulary of mimmia. MODEL_ROLES: target, shadow and reference. The target is
attacked; the shadow is the adversary's own model, trained on its members (a threshold is learned on its members vs non-members); reference models are trained without
the candidates (they calibrate per-image difficulty), one training set each.

Image sets are named "<model>_<kind>", kind MEMBERS (trained on, label 1) or NONMEMBERS (never seen,
label 0): the candidate sets CANDIDATE_SETS = target_members, target_nonmembers, shadow_members,
shadow_nonmembers. Reference i's training set is "reference_<i>" (reference_set(i)); in a manifest the
references' sets sit in one list, reference_members. These names are the manifest's keys, the keys of
Experiment.sources() and describe()["data"], the "role" column of scores.csv, and what
`mimmia train --role` takes (a model role stands for its training set: target -> target_members,
shadow -> shadow_members, reference_<i> -> reference_<i>; training_set()). In a bundle folder laid out
like assets/demo the models live in models/target, models/shadow and models/ref-<i> (reference_folder(i);
the short folder name is kept so bundles already built open unchanged).

Offline references (online_references False, the default) exclude every candidate. Online references
(online_references True, `mimmia train-references --online`) each train on a random half of a pool that
includes the candidates, so each candidate is IN for about half of them; in_matrix(ids) says where.
"""
import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from .data import as_ids, source_spec as spec_of
from .atomic import atomic_write_text
from .paths import require_exists

# --------------------------------------------------------------------------
# The role vocabulary (see the module docstring): manifest, experiment, report, CLI and bundle folders
# --------------------------------------------------------------------------
MODEL_ROLES = ("target", "shadow", "reference")
MEMBERS, NONMEMBERS = "members", "nonmembers"
LABELS = {MEMBERS: 1, NONMEMBERS: 0}


def set_name(model_role: str, kind: str) -> str:
    """("target", "members") -> "target_members"."""
    if model_role not in MODEL_ROLES or kind not in LABELS:
        raise ValueError(f"unknown image set {model_role!r}/{kind!r}; models are {MODEL_ROLES}, "
                         f"kinds {MEMBERS!r} and {NONMEMBERS!r}")
    return f"{model_role}_{kind}"


CANDIDATE_SETS = tuple(set_name(m, k) for m in MODEL_ROLES[:2] for k in (MEMBERS, NONMEMBERS))
ROLES = CANDIDATE_SETS  # the manifest's fixed id lists (kept under its old name)
REFERENCE_PREFIX, REFERENCE_FOLDER_PREFIX = "reference_", "ref-"


def set_label(name: str) -> int:
    """1 for a members set, 0 for a non-members set."""
    return LABELS[name.rsplit("_", 1)[1]]


def reference_set(i: int) -> str:
    """The name of reference model i's training set: "reference_<i>"."""
    return f"{REFERENCE_PREFIX}{int(i)}"


def reference_folder(i: int) -> str:
    """Reference model i's folder in a bundle: "ref-<i>"."""
    return f"{REFERENCE_FOLDER_PREFIX}{int(i)}"


def reference_index(folder_name: str) -> int | None:
    """"ref-3" -> 3; None for another name."""
    prefix, _, index = folder_name.partition("-")
    return int(index) if f"{prefix}-" == REFERENCE_FOLDER_PREFIX and index.isdigit() else None


def training_set(role: str) -> str:
    """The set a model of `role` trains on: target -> target_members, shadow -> shadow_members,
    reference_<i> -> reference_<i>; a set name is returned as it is."""
    if role in MODEL_ROLES[:2]:
        return set_name(role, MEMBERS)
    if role in CANDIDATE_SETS or (role.startswith(REFERENCE_PREFIX) and role[len(REFERENCE_PREFIX):].isdigit()):
        return role
    raise ValueError(f"unknown role {role!r}; give target, shadow or {REFERENCE_PREFIX}<i> (or an image set: "
                     f"{', '.join(CANDIDATE_SETS)})")


@dataclass
class SplitManifest:
    source: str                      # an open_source() spec, e.g. "demo" or "fashion-mnist:train"
    source_fingerprint: str
    seed: int
    target_members: list
    target_nonmembers: list
    shadow_members: list             # both shadow lists may be empty: no shadow model
    shadow_nonmembers: list
    reference_members: list = field(default_factory=list)  # one id list per reference model
    online_references: bool = False  # True: the references trained on candidates too (see in_matrix)

    def __post_init__(self):
        if not isinstance(self.source, str) or not isinstance(self.source_fingerprint, str):
            raise ValueError("manifest: source and source_fingerprint must be strings")
        self.seed = _seed(self.seed)
        for role in ROLES:
            setattr(self, role, _id_list(getattr(self, role), role))
        if not isinstance(self.reference_members, (list, tuple)):
            raise ValueError(f"manifest: reference_members must be a list of id lists, one per reference model, "
                             f"got {type(self.reference_members).__name__}")
        self.reference_members = [_id_list(ref, reference_set(i)) for i, ref in enumerate(self.reference_members)]
        if not isinstance(self.online_references, (bool, np.bool_)):
            raise ValueError(f"manifest: online_references must be true or false, got {self.online_references!r}")
        self.online_references = bool(self.online_references)
        if not self.target_members or not self.target_nonmembers:
            raise ValueError("manifest: target members and non-members must both be non-empty")
        if bool(self.shadow_members) != bool(self.shadow_nonmembers):
            raise ValueError("manifest: shadow members and non-members must be both given or both empty")
        candidates = set(self.target_members) | set(self.target_nonmembers)
        if set(self.target_members) & set(self.target_nonmembers):
            raise ValueError("manifest: target members and non-members overlap")
        if set(self.shadow_members) & set(self.shadow_nonmembers):
            raise ValueError("manifest: shadow members and non-members overlap")
        for i, ref in enumerate(self.reference_members):
            if candidates & set(ref) and not self.online_references:
                raise ValueError(f"manifest: reference model {i} was trained on target candidates; "
                                 f"calibration needs references that exclude them (or online_references: true)")

    def in_matrix(self, ids) -> np.ndarray:
        """(R, N) bool: whether reference r trained on image ids[n] (all False for offline references)."""
        ids = as_ids(ids, "in_matrix ids")
        return np.stack([np.isin(ids, ref) for ref in self.reference_members]) if self.reference_members \
            else np.zeros((0, len(ids)), dtype=bool)

    def ids(self, role: str) -> np.ndarray:
        if role.startswith(REFERENCE_PREFIX):
            index = role[len(REFERENCE_PREFIX):]
            if not index.isdigit() or int(index) >= len(self.reference_members):
                raise ValueError(f"unknown role {role!r}; this manifest has {len(self.reference_members)} references")
            return np.asarray(self.reference_members[int(index)], dtype=np.int64)
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; roles are {ROLES} and {REFERENCE_PREFIX}<i>")
        return np.asarray(getattr(self, role), dtype=np.int64)

    def check_source(self, source) -> None:
        """Refuse a source whose data differs from the one the manifest was made for."""
        fp = source.fingerprint()
        if fp != self.source_fingerprint:
            raise ValueError(f"manifest was made for data with fingerprint {self.source_fingerprint}, "
                             f"but {source.name} has {fp}: the data changed")
        roles = list(ROLES) + [reference_set(i) for i in range(len(self.reference_members))]
        for role in roles:
            missing = np.setdiff1d(self.ids(role), source.ids)
            if len(missing):
                raise ValueError(f"manifest {role} has {len(missing)} ids that {source.name} lacks, "
                                 f"e.g. {missing[:5].tolist()}")

    def save(self, path) -> Path:
        return atomic_write_text(path, json.dumps({"format": "mimmia-split", **asdict(self)}, indent=1))

    @classmethod
    def load(cls, path) -> "SplitManifest":
        path = require_exists(path, "split manifest")
        if path.is_dir():
            raise ValueError(f"{path} is a folder, not a split manifest (a JSON file)")
        try:
            d = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not a readable split manifest ({e})") from e
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: a split manifest is JSON, but this file is not ({e})") from e
        if not isinstance(d, dict):
            raise ValueError(f"{path}: a split manifest is a JSON object, but this file holds a JSON "
                             f"{JSON_TYPES.get(type(d), type(d).__name__)}")
        fmt = d.pop("format", None)
        if fmt != "mimmia-split":
            raise ValueError(f"{path}: not a mimmia split manifest ("
                             + (f"its format is {fmt!r}, not 'mimmia-split')" if fmt else "missing format: mimmia-split)"))
        _check_keys(d, path)
        try:
            return cls(**d)
        except ValueError as e:
            raise ValueError(f"{path}: malformed split manifest ({e})") from e


JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def _check_keys(d: dict, path) -> None:
    """Refuse a manifest object with keys missing or unknown, naming them."""
    known = [f.name for f in fields(SplitManifest)]
    required = [f.name for f in fields(SplitManifest) if f.default is MISSING and f.default_factory is MISSING]
    problems = [f"it lacks {', '.join(k for k in required if k not in d)}"] if set(required) - set(d) else []
    problems += [f"unknown keys {', '.join(sorted(set(d) - set(known)))}"] if set(d) - set(known) else []
    if problems:
        raise ValueError(f"{path}: malformed split manifest ({'; '.join(problems)}); "
                         f"its keys are format, {', '.join(known)}")


def _seed(seed) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"manifest: seed must be a whole number >= 0, got {seed!r}")
    return int(seed)


def _id_list(ids, role: str) -> list:
    if isinstance(ids, (str, bytes, dict)) or not hasattr(ids, "__iter__"):
        raise ValueError(f"manifest: {role} must be a list of image ids, got {type(ids).__name__}")
    out = as_ids(list(ids), f"manifest {role}")
    if out.ndim != 1:
        raise ValueError(f"manifest: {role} must be a flat list of image ids, got nested lists")
    out = out.tolist()
    if len(set(out)) != len(out):
        raise ValueError(f"manifest: {role} lists an id more than once")
    return out


def ids_fingerprint(ids) -> str:
    """16 hex digits naming a list of image ids (in its order): what a model's provenance records of the ids it
    trained on ("training_ids"), so a loader can check it against a manifest's set."""
    ids = as_ids(ids, "ids")
    return hashlib.sha256(ids.astype("<i8").tobytes()).hexdigest()[:16]


def make_split(source, source_spec: str | None, n_members: int, n_nonmembers: int, n_references: int = 0,
               n_reference_members: int | None = None, seed: int = 0) -> SplitManifest:
    """Draw disjoint target, shadow and reference sets from one source.

    Target and shadow each get n_members members and n_nonmembers non-members;
    each reference model gets its own n_reference_members images (default
    n_members) from the rest, so references exclude every candidate. Ids are
    sorted within each set. source_spec=None takes the source's own `.spec`.
    """
    seed = _seed(seed)
    n_ref = n_members if n_reference_members is None else n_reference_members
    if min(n_members, n_nonmembers) < 1:
        raise ValueError("a split needs at least one member and one non-member")
    if n_references < 0 or (n_references and n_ref < 1):
        raise ValueError(f"n_references must be >= 0 and each reference needs images, "
                         f"got {n_references} x {n_ref}")
    need = 2 * (n_members + n_nonmembers) + n_references * n_ref
    if need > len(source):
        raise ValueError(f"{source.name} has {len(source)} images; this split needs {need}")
    ids = np.random.default_rng(seed).permutation(source.ids)[:need]
    cuts = np.cumsum([n_members, n_nonmembers, n_members, n_nonmembers] + [n_ref] * n_references)[:-1]
    parts = np.split(ids, cuts)
    return SplitManifest(source_spec or spec_of(source), source.fingerprint(), seed,
                         *[np.sort(p).tolist() for p in parts[:4]],
                         reference_members=[np.sort(p).tolist() for p in parts[4:]])
