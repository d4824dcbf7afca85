"""Run a study: train what its points need, then score and attack each point, writing as it goes.

    WORK/models/<key>/      every trained model (and decoder fit), shared by the points that need it
    WORK/cache/             the score cache (WORK is OUT unless --work names a folder studies share)
    OUT/points/<id>.json    one point's settings, model fingerprints and metrics
    OUT/points/<id>.npz     its member and non-member scores, per attack and mask ratio
    OUT/points/<id>.manifest.json  a point with online references: who was IN where (SplitManifest)
    OUT/study.json, .csv    every finished point (results.py)

A killed study continues where it stopped: finished models are kept by key, and a point whose record
matches its settings and models is not scored again.
"""
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes, atomic_write_text
from ..attacks import ATTACKS, run_attack
from ..cache import ScoreCache
from ..checkpoint import attach_decoder, load_model
from ..experiment import Experiment
from ..report import jsonable
from ..scorer import Scorer
from ..scores import ScoreSpec
from ..utility import measure_utility, probe_split
from .models import ModelJob, fingerprint_of, fit_job, model_folder, model_job, run_jobs
from .results import point_metrics, write_study
from .spec import StudySpec, model_recipe
from .split import PointSplit, draw_split


RECORD_VERSION = 3  # what a point record holds; a new version rescores (from the score cache)
ONLINE = "online_"  # the jobs (and model roles in a record) of a point's online references: online_<i>


@dataclass
class PlannedPoint:
    index: int
    value: object
    label: str
    point: dict
    split: PointSplit
    jobs: dict          # role -> ModelJob: target, shadow, reference_<i>, and <role>+decoder fits

    @property
    def id(self) -> str:
        slug = "".join(c if c.isalnum() or c in ".-" else "-" for c in str(self.value))
        return f"{self.index:02d}-{slug}"

    def key(self) -> str:
        return fingerprint_of(RECORD_VERSION, self.point, {role: job.key for role, job in self.jobs.items()})


def plan_point(index: int, value, label: str, point: dict, pools: dict) -> PlannedPoint:
    """The point's split and the model jobs it needs."""
    data, seed = point["data"], point["seed"]
    split = draw_split(data, seed, pools)
    shadow_data = data["shadow"] or data["target"]
    jobs = {"target": model_job(model_recipe(point, "target"), "target", data["target"], split.members, seed),
            "shadow": model_job(model_recipe(point, "shadow"), "shadow", shadow_data, split.shadow_members, seed + 1)}
    for i, ids in enumerate(split.references):
        jobs[f"reference_{i}"] = model_job(model_recipe(point, "reference"), f"reference_{i}", data["target"], ids,
                                           seed + 2 + i)
    for i, ids in enumerate(split.online_manifest.reference_members if split.online_manifest else []):
        jobs[f"{ONLINE}{i}"] = model_job(model_recipe(point, "reference"), f"{ONLINE}{i}", data["target"], ids,
                                         seed + 2 + len(split.references) + i)
    decoder = point["decoder"]
    if decoder is not None and any(model_recipe(point, r)["take_epoch"] is not None for r in ("target", "shadow")):
        raise ValueError(f"point {value!r}: a decoder swap or fit uses each model's last epoch; drop take_epoch")
    if isinstance(decoder, dict):  # the adversary's images: the shadow's members and non-members
        adversary = np.concatenate([split.shadow_members, split.shadow_nonmembers])
        for role in [r for r in jobs if r != "shadow"]:
            jobs[f"{role}+decoder"] = fit_job(jobs[role], decoder["fit_epochs"], shadow_data, adversary, seed)
    elif decoder not in (None, "shadow"):
        raise ValueError(f"point {value!r}: decoder must be null, \"shadow\" or {{\"fit_epochs\": N}}, got {decoder!r}")
    return PlannedPoint(index, value, label, point, split, jobs)


def _load(root: Path, planned: PlannedPoint, role: str, device, shadow=None):
    """The model the attack uses for `role`: its snapshot, with a fitted decoder, or the loaded `shadow`'s
    swapped in."""
    job: ModelJob = planned.jobs.get(f"{role}+decoder", planned.jobs[role])
    recipe_role = "reference" if role.startswith(("reference_", ONLINE)) else role
    take = None if job.encoder else model_recipe(planned.point, recipe_role)["take_epoch"]
    loaded = load_model(model_folder(root, job, take), device)
    return attach_decoder(loaded, shadow) if shadow is not None else loaded


def _experiments(root: Path, planned: PlannedPoint, device) -> tuple[Experiment, Experiment | None]:
    """The point's experiment (offline references), and where it has online references, the same target
    with those instead (no shadow: only the target's candidates are IN or OUT of them, so the online
    attacks learn no threshold; the shadow's non-members stay RMIA's population)."""
    shadow = _load(root, planned, "shadow", device)
    swap = shadow if planned.point["decoder"] == "shadow" else None
    refs = [_load(root, planned, f"reference_{i}", device, swap) for i in range(len(planned.split.references))]
    sets = planned.split.sources()
    offline = Experiment(f"point {planned.label}", _load(root, planned, "target", device, swap), shadow, refs,
                         sets["target_members"], sets["target_nonmembers"], sets["shadow_members"],
                         sets["shadow_nonmembers"])
    manifest = planned.split.online_manifest
    if manifest is None:
        return offline, None
    online = [_load(root, planned, f"{ONLINE}{i}", device, swap) for i in range(len(manifest.reference_members))]
    return offline, Experiment(f"{offline.name}, online references", offline.target, None, online, offline.members,
                               offline.nonmembers, None, offline.shadow_nonmembers, manifest,
                               reference_ids=manifest.reference_members)


def _attacks(experiments: tuple, point: dict, scorer: Scorer) -> list:
    """Each attack the point asks for that its experiment can run: online ones on the online references."""
    attack, out = point["attack"], []
    for ratio in attack["mask_ratios"]:
        for name in attack["attacks"]:
            experiment = experiments[1] if ATTACKS[name].online else experiments[0]
            if experiment is not None and name in experiment.available_attacks():
                out.append(run_attack(name, experiment, ScoreSpec(ratio, attack["num_masks"], 0), scorer))
    return out


def _utility(experiment: Experiment, planned: PlannedPoint) -> dict | None:
    if not planned.point["utility"]:
        return None
    probe_train, probe_test = probe_split(experiment.nonmembers, seed=planned.point["seed"])
    result = measure_utility(experiment.target.model, experiment.nonmembers, probe_train, probe_test,
                             mask_ratio=model_recipe(planned.point, "target")["mask_ratio"])
    return jsonable(result)


def score_point(root: Path, work: Path, planned: PlannedPoint, device, scorer: Scorer) -> dict:
    """Attack one point (its models under `work`); write its record and score arrays; return the record."""
    experiment, online = experiments = _experiments(work, planned, device)
    results = _attacks(experiments, planned.point, scorer)
    arrays = {}
    for r in results:
        arrays[f"{r.attack}@{r.spec.mask_ratio:g}/members"] = r.member_scores
        arrays[f"{r.attack}@{r.spec.mask_ratio:g}/nonmembers"] = r.nonmember_scores
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(root / "points" / f"{planned.id}.npz", buffer.getvalue())
    models = {role: m.fingerprint for role, m in experiment.models().items()}
    models.update({f"{ONLINE}{i}": m.fingerprint for i, m in enumerate(online.references if online else [])})
    record = dict(id=planned.id, key=planned.key(), value=planned.value, label=planned.label,
                  settings=planned.point, scores_file=f"points/{planned.id}.npz", models=models,
                  results=[point_metrics(r) for r in results], utility=_utility(experiment, planned))
    if online is not None:  # who was IN where: the online references' sets (SplitManifest.in_matrix)
        record["manifest_file"] = f"points/{planned.id}.manifest.json"
        online.manifest.save(root / record["manifest_file"])
    atomic_write_text(root / "points" / f"{planned.id}.json", json.dumps(jsonable(record), indent=1))
    return record


def _finished(root: Path, planned: PlannedPoint) -> dict | None:
    path = root / "points" / f"{planned.id}.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    ok = record.get("key") == planned.key() and (root / record.get("scores_file", "")).is_file()
    return record if ok else None


def run_study(spec: StudySpec, out_dir, *, quick: bool = False, workers: int = 1, device="cpu", log=print,
              command: str = "", work_dir=None) -> Path:
    """Train, score and attack every point of `spec` into out_dir; returns the path of study.json.
    `work_dir` (default out_dir) holds the models and the score cache: studies that share one reuse
    each other's models."""
    root = Path(out_dir)
    work = Path(work_dir) if work_dir is not None else root
    pools = {}
    planned = [plan_point(i, v, label, p, pools) for i, (v, label, p) in enumerate(spec.resolved_points(quick))]
    jobs = [job for p in planned for job in p.jobs.values()]
    log(f"study {spec.name}: {len(planned)} points, {len(set(jobs))} models")
    run_jobs(work, jobs, workers=workers, device=device, log=log)
    scorer = Scorer(device, cache=ScoreCache(work / "cache"))
    records = []
    for p in planned:
        record = _finished(root, p)
        if record is None:
            record = score_point(root, work, p, device, scorer)
            log(f"scored point {p.label}")
        records.append(record)
        write_study(root, spec, records, quick=quick, command=command)
    return root / "study.json"
