"""The models a study trains: one job per distinct (recipe, training images, seed), so points that
change nothing about a model share it, and a killed study retrains only what was not finished.

A job's folder is ROOT/models/<key>; it is complete when its checkpoint's provenance carries the key
(train_mae resumes a half-trained folder from its state file). Decoder fits (the encoder-only setting)
are jobs too, on a finished model's encoder.
"""
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, load_model
from ..config import get_config
from ..data import open_source
from ..fit_decoder import fit_decoder
from ..model import build_model
from ..parallel import run_in_processes
from ..train import TrainConfig, train_mae

TRAIN_FIELDS = ("epochs", "save_epochs", "batch_size", "lr", "warmup_epochs", "weight_decay", "mask_ratio", "augment",
                "dp")


@dataclass(frozen=True)
class ModelJob:
    key: str
    role: str                  # target, shadow, reference_<i>; "<role>+decoder" for a fit
    recipe: str                # JSON: the model recipe (study.spec.MODEL_FIELDS), or the fit's settings
    data: str                  # source spec of the training images
    ids: tuple                 # their ids
    seed: int
    encoder: str | None = None  # a fit's encoder: the key of the model whose encoder it keeps

    def describe(self) -> str:
        return f"{self.role} ({self.key}, {len(self.ids)} images)"


def fingerprint_of(*parts) -> str:
    """16 hex digits naming JSON-able parts (a job, a point)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_job(recipe: dict, role: str, data: str, ids, seed: int) -> ModelJob:
    """The job that trains `recipe` on `ids` of source `data`; the snapshot taken (take_epoch) is not part
    of it, so every epoch of one run is one job."""
    trained = {k: v for k, v in recipe.items() if k != "take_epoch"}
    ids = tuple(int(i) for i in ids)
    text = json.dumps(trained, sort_keys=True)
    return ModelJob(fingerprint_of("train", text, data, hashlib.sha256(str(ids).encode()).hexdigest(), seed), role, text,
                    data, ids, seed)


def fit_job(encoder: ModelJob, epochs: int, data: str, ids, seed: int) -> ModelJob:
    """The job that fits a fresh decoder for `epochs` under the encoder of `encoder`'s model, in batches
    and at the mask ratio the encoder trained with."""
    ids, trained = tuple(int(i) for i in ids), json.loads(encoder.recipe)
    text = json.dumps({"fit_epochs": epochs, "batch_size": trained["batch_size"], "mask_ratio": trained["mask_ratio"]},
                      sort_keys=True)
    return ModelJob(fingerprint_of("fit", encoder.key, text, data, str(ids), seed), f"{encoder.role}+decoder", text, data,
                    ids, seed, encoder=encoder.key)


def job_folder(root: Path, key: str) -> Path:
    return Path(root) / "models" / key


def model_folder(root: Path, job: ModelJob, take_epoch: int | None = None) -> Path:
    """Where the job's model (or its snapshot after `take_epoch` epochs) lies."""
    folder = job_folder(root, job.key)
    if take_epoch is None or take_epoch == json.loads(job.recipe).get("epochs"):
        return folder
    return folder / "epochs" / f"epoch-{take_epoch:04d}"


def is_done(root: Path, job: ModelJob) -> bool:
    try:
        return load_model(job_folder(root, job.key)).provenance.get("study_job") == job.key
    except (CheckpointError, OSError, ValueError):
        return False


def _train_config(recipe: dict, seed: int) -> TrainConfig:
    settings = {k: recipe[k] for k in TRAIN_FIELDS if k in recipe}
    settings["save_epochs"] = tuple(settings.get("save_epochs", ()))
    return TrainConfig(**settings, seed=seed)


def run_job(root: Path, job: ModelJob, device=None) -> str:
    """Train (or fit) one job's model into its folder, resuming a half-done one; returns the key."""
    if is_done(root, job):
        return job.key
    recipe, folder = json.loads(job.recipe), job_folder(root, job.key)
    source = open_source(job.data).subset(list(job.ids), name=f"{job.data} ({job.role})")
    provenance = {"study_job": job.key, "role": job.role, "data_spec": job.data}
    if job.encoder is not None:
        encoder = load_model(job_folder(root, job.encoder), device or "cpu")
        fit_decoder(encoder, source, epochs=recipe["fit_epochs"], batch_size=recipe["batch_size"], lr=2e-3,
                    mask_ratio=recipe["mask_ratio"],
                    seed=job.seed, device=device, progress=False, replace_decoder=True, out_dir=folder,
                    provenance=provenance)
        return job.key
    model = build_model(get_config(recipe["preset"], **recipe["config"]), seed=job.seed)
    train_mae(model, source, _train_config(recipe, job.seed), out_dir=folder, resume=True, progress=False,
              device=device, provenance={**provenance, "recipe": recipe})
    return job.key


def run_jobs(root: Path, jobs: list, *, workers: int = 1, device=None, log=print) -> None:
    """Run every unfinished job: fits after the models they fit on; `workers` processes (one CPU thread
    each) on the CPU, one process per GPU on CUDA."""
    todo = [j for j in dict.fromkeys(jobs) if not is_done(root, j)]
    for stage in ([j for j in todo if j.encoder is None], [j for j in todo if j.encoder is not None]):
        devices = _devices(device, workers)
        calls = [(root, job, devices[i % len(devices)]) for i, job in enumerate(stage)]
        run_in_processes(run_job, calls, len(devices),
                         on_done=lambda i, _, stage=stage: log(f"[{i + 1}/{len(stage)}] trained {stage[i].describe()}"))


def _devices(device, workers: int) -> list:
    if device is not None and torch.device(device).type == "cuda":
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return [device] * workers
