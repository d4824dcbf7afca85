"""An experiment: the target model, its candidate images, and what the adversary holds.

The adversary's side is a shadow model with its own members and non-members
(to learn a threshold) and reference models trained without the candidates
(to calibrate per-image difficulty). `load_experiment` builds one from paths,
source specs (see data.open_source) and a split manifest.
"""
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .assets import DEMO_DIR
from .attacks import ATTACKS
from .checkpoint import LoadedModel, load_model, model_fingerprint
from .data import DEMO_DATA, ImageSource, load_demo, load_npz, open_source
from .checkpoint import assumed_settings, attach_decoder, describe_checkpoint
from .manifest import (CANDIDATE_SETS, REFERENCE_FOLDER_PREFIX, REFERENCE_PREFIX, SplitManifest, ids_fingerprint,
                       reference_folder, reference_index, reference_set)
from .train import default_device


@dataclass
class Experiment:
    name: str
    target: LoadedModel
    shadow: LoadedModel | None
    references: list
    members: ImageSource                  # target candidates, label 1
    nonmembers: ImageSource               # target candidates, label 0
    shadow_members: ImageSource | None = None
    shadow_nonmembers: ImageSource | None = None
    manifest: SplitManifest | None = None
    notes: list = field(default_factory=list)   # e.g. where an encoder-only target's decoder came from
    reference_ids: list | None = None     # online references: per reference, the ids it trained on (else None)

    def sources(self) -> dict:
        """Image set name (manifest.CANDIDATE_SETS: target_members, ...) -> source, for the sets it has."""
        sets = zip(CANDIDATE_SETS, (self.members, self.nonmembers, self.shadow_members, self.shadow_nonmembers))
        return {name: s for name, s in sets if s is not None}

    def models(self) -> dict:
        """Model role -> LoadedModel: target, shadow (if any), reference_<i> (manifest.reference_set)."""
        shadow = {} if self.shadow is None else {"shadow": self.shadow}
        return {"target": self.target, **shadow, **{reference_set(i): r for i, r in enumerate(self.references)}}

    def fingerprint(self) -> str:
        """16 hex digits naming every model's weights and config and every image set, by role: results
        computed for one fingerprint are valid for exactly this experiment (the dashboard's cache key)."""
        parts = [f"{role}={model_fingerprint(m.model)}" for role, m in self.models().items()]
        parts += [f"{name}={s.fingerprint()}" for name, s in self.sources().items()]
        return hashlib.sha256(" ".join(parts).encode()).hexdigest()[:16]

    def population(self, role: str = "target") -> ImageSource | None:
        """RMIA's population samples for the `role` model ("target" or "shadow"): images that neither it nor
        the references trained on, the other side's non-members (the shadow's for the target, the target's
        for the shadow). None where there are none, or where the manifest says a model trained on them."""
        population = self.shadow_nonmembers if role == "target" else self.nonmembers
        if population is None or self.manifest is None:
            return population
        trained = set(self.manifest.target_members if role == "target" else self.manifest.shadow_members)
        if not self.manifest.online_references:
            trained.update(*self.manifest.reference_members)
        return None if trained & set(population.ids.tolist()) else population

    def available_attacks(self, varying_mask_ratio: bool = False) -> list[str]:
        """The attacks this experiment can run, in attacks.ATTACKS order: those with enough reference models
        (calibrated needs one, LiRA two), online references for the online ones, population samples for RMIA
        (population) and, for an encoder-only target, those needing no decoder.
        varying_mask_ratio: only those whose result depends on the mask ratio (what a sweep takes).
        The CLI's --attacks auto and the dashboard both ask this."""
        return [name for name, cls in ATTACKS.items()
                if len(self.references) >= cls.min_references
                and (self.target.has_decoder or not cls.uses_distance)
                and (cls.uses_mask_ratio or not varying_mask_ratio)
                and (self.reference_ids is not None or not cls.online)
                and (self.population() is not None or not cls.needs_population)]

    def describe(self) -> dict:
        """Names, formats, fingerprints and split sizes, for the overview page and reports."""
        return dict(
            name=self.name,
            target=describe_checkpoint(self.target),
            shadow=describe_checkpoint(self.shadow) if self.shadow is not None else None,
            references=[describe_checkpoint(r) for r in self.references],
            data={role: dict(name=s.name, spec=s.spec, size=len(s), fingerprint=s.fingerprint())
                  for role, s in self.sources().items()},
            manifest=None if self.manifest is None else dict(
                source=self.manifest.source, source_fingerprint=self.manifest.source_fingerprint,
                seed=self.manifest.seed, reference_sets=len(self.manifest.reference_members),
                online_references=self.manifest.online_references),
            notes=list(self.notes),
        )


def _model(x, device) -> LoadedModel:
    """A LoadedModel, a path, 'PATH?key=value' or {"path": ..., "config": {...}} -> LoadedModel."""
    return x if isinstance(x, LoadedModel) else load_model(x, device)


def _source(x) -> ImageSource | None:
    return x if x is None or isinstance(x, ImageSource) else open_source(str(x))


def load_experiment(target, shadow=None, references=(), manifest=None, data=None, members=None, nonmembers=None,
                    shadow_members=None, shadow_nonmembers=None, device=None, decoder_from=None,
                    name: str | None = None) -> Experiment:
    """Build an experiment from checkpoint paths (or LoadedModels) and sources.

    Candidates come from `manifest` (a path or SplitManifest) applied to `data`
    (a spec or source; default: the manifest's own source spec, checked against
    its fingerprint), or from explicit `members` / `nonmembers` (and the
    shadow's), which take precedence. An encoder-only target gets the decoder
    of `decoder_from` ("shadow", a path or a LoadedModel) attached, as in the
    paper's encoder-only setting.
    """
    device = device if device is not None else default_device()
    target, shadow = _model(target, device), (None if shadow is None else _model(shadow, device))
    references = [_model(r, device) for r in references]
    sets = dict(zip(CANDIDATE_SETS, map(_source, (members, nonmembers, shadow_members, shadow_nonmembers))))
    if manifest is not None:
        manifest = manifest if isinstance(manifest, SplitManifest) else SplitManifest.load(manifest)
        data = _source(data if data is not None else manifest.source)
        manifest.check_source(data)
        for role, given in sets.items():
            if given is None:
                sets[role] = data.subset(manifest.ids(role), name=f"{data.name}/{role}")
    if sets["target_members"] is None or sets["target_nonmembers"] is None:
        raise ValueError("an experiment needs target members and non-members: give a manifest, or members and "
                         "nonmembers sources")
    notes, reference_ids = [], None
    if manifest is not None and manifest.online_references:
        reference_ids = reference_training_ids(manifest, references)
    elif manifest is not None:
        shadow_ids = set(manifest.shadow_members) | set(manifest.shadow_nonmembers)
        seen = [i for i, ref in enumerate(manifest.reference_members) if shadow_ids & set(ref)]
        if seen:
            notes.append(f"reference set(s) {seen} overlap the shadow's images: thresholds of calibrated attacks, "
                         f"learned on the shadow, are biased")
    for role, m in [("target", target), ("shadow", shadow)] + [(f"reference {i}", r) for i, r in enumerate(references)]:
        assumed = assumed_settings(m.provenance) if m is not None else {}
        if assumed:
            notes.append(f"{role} {m.path}: assumed, not read from the file: "
                         + "; ".join(f"{k} ({why})" for k, why in assumed.items()))
    if not target.has_decoder and decoder_from is not None:
        donor = shadow if decoder_from == "shadow" else _model(decoder_from, device)
        if donor is None:
            raise ValueError("decoder_from='shadow' needs a shadow model")
        notes.append(f"the target {target.path} is encoder-only; its decoder comes from {donor.path}")
        target = attach_decoder(target, donor)
    elif not target.has_decoder:
        notes.append(f"the target {target.path} is encoder-only, so attacks that reconstruct are left out; to "
                     f"run them, {target.decoder_howto}")
    return Experiment(name or Path(target.path).name, target, shadow, references,
                      sets["target_members"], sets["target_nonmembers"], sets["shadow_members"],
                      sets["shadow_nonmembers"], manifest, notes, reference_ids)


def reference_training_ids(manifest: SplitManifest, references) -> list:
    """Per reference model, the ids of the manifest's reference set it trained on: the set its provenance
    names ("role": reference_<i>, as `mimmia train-references` and `mimmia train --role` write it), checked
    against the fingerprint of its training ids where the provenance records one (training_ids)."""
    out = []
    for r in references:
        role = r.provenance.get("role")
        if not isinstance(role, str) or not role.startswith(REFERENCE_PREFIX):
            raise ValueError(f"reference {r.path} does not say which reference set it trained on (no 'role' "
                             f"{REFERENCE_PREFIX}<i> in its provenance); online attacks need to know, so train it "
                             f"with `mimmia train-references --online` or `mimmia train --role {REFERENCE_PREFIX}<i>`")
        ids = manifest.ids(role)
        recorded = r.provenance.get("training_ids")
        if recorded is not None and recorded != ids_fingerprint(ids):
            raise ValueError(f"reference {r.path} trained on other ids than the manifest's {role} (training ids "
                             f"fingerprint {recorded}, the manifest's {ids_fingerprint(ids)}): another manifest?")
        out.append(ids)
    return out


def experiment_file_args(path) -> dict:
    """load_experiment keyword arguments from a JSON file; relative paths are relative to the file.

    A model is a path ("models/t", "off.pth?decoder_num_heads=4") or an object
    {"path": "off.pth", "config": {"decoder_num_heads": 4, "mean": [0.5], "std": [0.5]}}.
    """
    path = Path(path)
    try:
        args = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable experiment JSON file ({e})") from e
    allowed = {"target", "shadow", "references", "manifest", "data", "members", "nonmembers", "shadow_members",
               "shadow_nonmembers", "decoder_from", "name"}
    if not isinstance(args, dict) or "target" not in args or set(args) - allowed:
        raise ValueError(f"{path}: an experiment file is a JSON object with 'target' and any of {sorted(allowed)}")

    def resolve(value):  # paths relative to the JSON file; source specs "kind:PATH" too
        if isinstance(value, dict) and isinstance(value.get("path"), str):  # a model with its "config"
            return {**value, "path": resolve(value["path"])}
        if not isinstance(value, str) or value in ("demo", "shadow"):
            return value
        kind, sep, rest = value.partition(":")
        if sep and kind in ("npz", "folder") and not Path(rest).is_absolute():
            return f"{kind}:{path.parent / rest}"
        if not sep and not Path(value).is_absolute():
            return str(path.parent / value)
        return value
    return {k: v if k == "name" else [resolve(x) for x in v] if k == "references" else resolve(v)
            for k, v in args.items()}


def load_experiment_file(path, device=None) -> Experiment:
    """An experiment described by a JSON file of load_experiment arguments (see experiment_file_args)."""
    return load_experiment(**experiment_file_args(path), device=device)


def demo_models(demo_dir=DEMO_DIR) -> dict:
    """Folder name -> checkpoint directory of a bundle laid out like assets/demo: target, shadow (if any),
    ref-<i> (manifest.reference_folder), the references in index order."""
    models = Path(demo_dir) / "models"
    indices = sorted(i for p in models.glob(f"{REFERENCE_FOLDER_PREFIX}*") if (i := reference_index(p.name)) is not None)
    refs = [models / reference_folder(i) for i in indices]
    shadow = {"shadow": models / "shadow"} if (models / "shadow").exists() else {}
    return {"target": models / "target", **shadow, **{p.name: p for p in refs}}


def load_demo_experiment(device=None, demo_dir=DEMO_DIR) -> Experiment:
    """The bundled demo: target, shadow and ref-* MAEs on a Fashion-MNIST subset (assets/demo)."""
    demo_dir = Path(demo_dir)
    models = demo_models(demo_dir)
    if not (demo_dir / "manifest.json").exists() or not models["target"].exists():
        raise FileNotFoundError(f"no demo bundle in {demo_dir}; build it with `mimmia build-demo --out {demo_dir}`")
    refs = [path for name, path in models.items() if reference_index(name) is not None]
    data = load_demo() if demo_dir == DEMO_DIR else load_npz(demo_dir / DEMO_DATA.name, name="demo-fashion-mnist")
    return load_experiment(models["target"], models.get("shadow"), refs, manifest=demo_dir / "manifest.json",
                           data=data, device=device, name="demo")


__all__ = ["Experiment", "load_experiment", "reference_training_ids", "load_experiment_file", "experiment_file_args", "load_demo_experiment",
           "demo_models", "DEMO_DIR"]
