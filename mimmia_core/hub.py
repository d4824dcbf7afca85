"""Published MAEs by name: the files of `hf:ORG/NAME[@REVISION]` and `timm:MODEL_NAME[@REVISION]`.

Name resolution only finds files; every setting still comes from what the files say (or from
the ?key=value settings), exactly as for a local folder:

    hf:facebook/vit-mae-base             a transformers ViTMAEForPreTraining repository (default branch)
    hf:facebook/vit-mae-base@<commit>    ... pinned to a commit (or a branch / tag)
    timm:vit_base_patch16_224.mae        timm's pretrained MAE encoder (encoder-only), from the hub
                                         repository timm's own registry names (timm/vit_base_patch16_224.mae)

Files come through huggingface_hub (`hf_hub_download`) into the standard Hugging Face cache
(HF_HOME, HF_HUB_CACHE), the cache timm's own downloads use, so a model fetched once online
loads offline (HF_HUB_OFFLINE=1) from there. A token, where a repository needs one, is found by
the library itself (HF_TOKEN, or `hf auth login`); mimmia never takes or records one. Only
config.json, preprocessor_config.json and the weights are fetched: model.safetensors, sharded
safetensors with their index, else pytorch_model.bin, which goes through the same
`torch.load(weights_only=True)` loader as a local file. The commit hash and the sha256 of
every file read go into the provenance, so a report says exactly which weights it judged.

No mimmia_core import here: `checkpoint.load_model` calls `resolve()` and loads the folder.
"""
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

HF, TIMM = "hf", "timm"
SCHEMES = (HF, TIMM)
CONFIG, PREPROCESSOR = "config.json", "preprocessor_config.json"
SAFETENSORS, INDEX, PICKLE = "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"
WEIGHT_FILES = (SAFETENSORS, INDEX, PICKLE)  # the loader's own order of preference (checkpoint.base.read_hub_weights)
COMMIT = re.compile(r"^[0-9a-f]{40}$")
_OFFLINE_HOW = ("offline mode is on (HF_HUB_OFFLINE=1), so nothing is downloaded. On a machine with network{home}, "
                "run once {cmd}; then run offline again (or copy that cache here and point HF_HOME at it)")


@dataclass(frozen=True)
class KnownMAE:
    """A published MAE for the dashboard's picker: what it is and how big."""
    architecture: str
    parameters: str          # trained parameters in the files (encoder + decoder where included)
    download: str            # the weights' size in float32
    has_decoder: bool

    def caption(self) -> str:
        part = ("encoder and decoder: reconstruction attacks run on it directly" if self.has_decoder else
                "encoder only: reconstruction needs a decoder ('decoder from: shadow', --decoder-from shadow)")
        return (f"{self.architecture}; {self.parameters} parameters, about {self.download} to download once; "
                f"{part}")


KNOWN_MAES = {
    "hf:facebook/vit-mae-base": KnownMAE("ViT-B/16 encoder + 8-layer decoder (512 wide)", "112 M", "450 MB", True),
    "hf:facebook/vit-mae-large": KnownMAE("ViT-L/16 encoder + 8-layer decoder (512 wide)", "330 M", "1.3 GB", True),
    "hf:facebook/vit-mae-huge": KnownMAE("ViT-H/14 encoder + 8-layer decoder (512 wide)", "657 M", "2.6 GB", True),
    "timm:vit_base_patch16_224.mae": KnownMAE("ViT-B/16 MAE encoder", "86 M", "345 MB", False),
    "timm:vit_large_patch16_224.mae": KnownMAE("ViT-L/16 MAE encoder", "303 M", "1.2 GB", False),
    "timm:vit_huge_patch14_224.mae": KnownMAE("ViT-H/14 MAE encoder", "631 M", "2.5 GB", False),
}
KNOWN_NOTE = ("Needs a one-time download online (into the Hugging Face cache, HF_HOME); offline "
              "(HF_HUB_OFFLINE=1) it loads from that cache.")


class HubError(ValueError):
    """A name that cannot be resolved; the message names it, what went wrong and what to do."""


@dataclass(frozen=True)
class HubName:
    """A parsed name: `text` as typed (no settings), the hub repository and the revision asked for."""
    text: str
    scheme: str
    repo_id: str
    revision: str | None = None      # None: the default branch
    timm_name: str | None = None     # timm:NAME only: the timm model name (architecture.tag)


@dataclass
class HubFiles:
    """What a name resolved to: a snapshot folder of the HF cache, its commit and the files read."""
    name: HubName
    folder: Path
    commit: str
    files: dict                      # file name -> sha256 of its bytes
    uncached: list = field(default_factory=list)  # optional files not in the cache (offline: unknown)

    def provenance(self) -> dict:
        out = {"name": self.name.text, "repo_id": self.name.repo_id, "revision": self.commit,
               "requested_revision": self.name.revision or "the default branch", "files": dict(self.files)}
        if self.name.timm_name:
            out["timm_name"] = self.name.timm_name
        if self.uncached:
            out["not_in_cache"] = list(self.uncached)
        return out

    def explain_missing(self, missing: dict) -> dict:
        """MissingSettingsError reasons, with why an optional file may be absent (offline, never fetched)."""
        if PREPROCESSOR not in self.uncached:
            return missing
        hint = (f" (offline, and {PREPROCESSOR} is not in the cache: if {self.name.repo_id} has one, fetch it "
                f"once online: {download_command(self.name)})")
        return {k: why + hint if k in ("mean", "std") else why for k, why in missing.items()}


# --------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------
def is_hub_name(text) -> bool:
    """Whether `text` (a path string, maybe with ?settings) names a model on a hub, not a file.
    A path that exists as written is a path."""
    if not isinstance(text, str):
        return False
    scheme, sep, _ = text.partition(":")
    return bool(sep) and scheme in SCHEMES and not Path(text).exists()


def _split_revision(text: str, rest: str) -> tuple[str, str | None]:
    name, at, revision = rest.partition("@")
    if at and not revision.strip():
        raise HubError(f"{text}: nothing after '@'; give a revision (a branch, tag or commit hash) or drop the '@'")
    return name.strip(), (revision.strip() or None)


def parse_hub_name(text: str) -> HubName:
    """'hf:ORG/NAME[@REVISION]' or 'timm:MODEL_NAME[@REVISION]' (settings after '?' already split off)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    scheme, _, rest = text.partition(":")
    name, revision = _split_revision(text, rest)
    if scheme == TIMM:
        if not name or "/" in name:
            raise HubError(f"{text}: a timm name is timm:MODEL_NAME, e.g. timm:vit_base_patch16_224.mae "
                           f"(for a hub repository use hf:ORG/NAME)")
        repo, _, pinned = _timm_repo(text, name).partition("@")  # timm may pin a revision: 'repo@rev'
        return HubName(text, TIMM, repo, revision or pinned or None, name)
    if scheme != HF:
        raise HubError(f"{text}: unknown scheme {scheme!r}; names are hf:ORG/NAME[@REVISION] or timm:MODEL_NAME")
    try:
        if name.count("/") != 1:
            raise HFValidationError("expected ORG/NAME")
        validate_repo_id(name)
    except HFValidationError as e:
        raise HubError(f"{text}: not a Hugging Face repository name ({e}); write hf:ORG/NAME[@REVISION], "
                       f"e.g. hf:facebook/vit-mae-base") from None
    return HubName(text, HF, name, revision)


def _timm_mae_names() -> list:
    import timm
    return [n for n in timm.list_pretrained("vit_*") if "mae" in n.partition(".")[2]]


def _timm_repo(text: str, name: str) -> str:
    """The hub repository timm's registry names for the pretrained weights `name` (architecture.tag)."""
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError as e:  # a tag the architecture does not have
        raise HubError(f"{text}: {e} MAE encoders timm knows: {', '.join(_timm_mae_names())}") from None
    if cfg is None:
        raise HubError(f"{text}: timm knows no pretrained model {name!r}; MAE encoders timm knows: "
                       f"{', '.join(_timm_mae_names())}")
    if "mae" not in (cfg.tag or ""):
        raise HubError(f"{text} is not an MAE: timm's weights {cfg.architecture}.{cfg.tag} were not trained as a "
                       f"masked autoencoder; MAE encoders timm knows: {', '.join(_timm_mae_names())}")
    if not cfg.hf_hub_id:
        raise HubError(f"{text}: timm downloads these weights from {cfg.url}, not from the Hugging Face hub; "
                       f"download the file and give its path (the official .pth loader reads it)")
    if cfg.hf_hub_filename and cfg.hf_hub_filename not in WEIGHT_FILES:
        raise HubError(f"{text}: timm keeps these weights in {cfg.hf_hub_filename} of {cfg.hf_hub_id}, which "
                       f"mimmia does not read; download it and give its path")
    return cfg.hf_hub_id


# --------------------------------------------------------------------------
# The cache and offline mode, read when a name is resolved
# --------------------------------------------------------------------------
def _env_path(value: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(value)))


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, as huggingface_hub finds it (HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub),
    read from the environment now rather than when the library was imported."""
    from huggingface_hub import constants

    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return _env_path(os.environ[var])
    if os.environ.get("HF_HOME"):
        return _env_path(os.environ["HF_HOME"]) / "hub"
    return Path(constants.HF_HUB_CACHE)


def offline_mode() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as huggingface_hub reads it, now or at its import."""
    from huggingface_hub import constants

    now = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.HF_HUB_OFFLINE or now.upper() in constants.ENV_VARS_TRUE_VALUES


def download_command(name: HubName) -> str:
    """The one-time download, for a machine with network: mimmia's own (fetches exactly what it reads),
    or the hf CLI that huggingface_hub installs."""
    revision = f" --revision {name.revision}" if name.revision else ""
    files = "--include config.json --include model.safetensors" if name.scheme == TIMM else \
        "--include config.json --include preprocessor_config.json --include 'model*.safetensors*'"
    return (f"`python -m mimmia_core inspect {name.text}` (fetches exactly what mimmia reads), or "
            f"`hf download {name.repo_id}{revision} {files}` (add `--include pytorch_model.bin` where the "
            f"repository has no safetensors)")


def _home_hint() -> str:
    return f" and HF_HOME={os.environ['HF_HOME']}" if os.environ.get("HF_HOME") else ""


# --------------------------------------------------------------------------
# Errors, each in words
# --------------------------------------------------------------------------
def _cached_revisions(storage: Path) -> str:
    refs = sorted(p for p in (storage / "refs").rglob("*") if p.is_file()) if (storage / "refs").is_dir() else []
    shown = [f"{p.relative_to(storage / 'refs').as_posix()} -> {p.read_text().strip()[:12]}" for p in refs]
    snaps = sorted(p.name[:12] for p in (storage / "snapshots").iterdir()) if (storage / "snapshots").is_dir() else []
    return f"refs {shown or 'none'}, snapshots {snaps or 'none'}"


def _not_cached(name: HubName, cache: Path, revision: str | None, filename: str) -> str:
    """What the cache lacks: the repository, the revision, or one file."""
    from huggingface_hub.file_download import repo_folder_name

    storage = cache / repo_folder_name(repo_id=name.repo_id, repo_type="model")
    if not storage.is_dir():
        return f"{name.repo_id} is not in the Hugging Face cache {cache}"
    rev = revision or "main"
    commit = rev if COMMIT.match(rev) else None
    if commit is None and (storage / "refs" / rev).is_file():
        commit = (storage / "refs" / rev).read_text().strip()
    if commit is None or not (storage / "snapshots" / commit).is_dir():
        return (f"revision {rev!r} of {name.repo_id} is not in the Hugging Face cache {cache} "
                f"(cached: {_cached_revisions(storage)})")
    return f"{filename} of {name.repo_id} at commit {commit} is not in the Hugging Face cache {cache}"


def _explain(e: Exception, name: HubName, cache: Path, offline: bool, filename: str,
             revision: str | None) -> HubError:
    """A huggingface_hub error as a HubError naming the model, what went wrong and what to do."""
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RemoteEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    login = "log in once with `hf auth login`, or set HF_TOKEN in the environment (never on a command line)"
    text = name.text
    if isinstance(e, GatedRepoError):
        return HubError(f"{text}: {name.repo_id} is a gated repository: accept its conditions on "
                        f"https://huggingface.co/{name.repo_id} and {login}")
    if isinstance(e, RepositoryNotFoundError):
        return HubError(f"{text}: no repository {name.repo_id} on the Hugging Face hub (check the name; if it is "
                        f"private, {login})")
    if isinstance(e, RevisionNotFoundError):
        return HubError(f"{text}: {name.repo_id} has no revision {revision!r} (a branch, tag or commit hash)")
    if isinstance(e, RemoteEntryNotFoundError):
        return HubError(f"{text}: {name.repo_id} has no {filename}" + (
            ", so it is not a transformers ViTMAE or timm model repository" if filename == CONFIG else ""))
    if isinstance(e, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        what = _not_cached(name, cache, revision, filename)
        if offline:
            return HubError(f"{text}: {what}, and " + _OFFLINE_HOW.format(cmd=download_command(name),
                                                                         home=_home_hint()))
        return HubError(f"{text}: {what}, and the Hugging Face hub cannot be reached ({e.__cause__ or e}). "
                        f"Check the network; on a machine without one, download it elsewhere once "
                        f"({download_command(name)}) and set HF_HUB_OFFLINE=1")
    if isinstance(e, HfHubHTTPError) and e.response is not None and e.response.status_code == 401:
        return HubError(f"{text}: the hub refused the token for {name.repo_id} (401); {login}")
    return HubError(f"{text}: could not fetch {filename} of {name.repo_id} ({type(e).__name__}: {e})")


# --------------------------------------------------------------------------
# Fetching: into the HF cache, or from it when offline
# --------------------------------------------------------------------------
@dataclass
class _Fetch:
    name: HubName
    cache: Path
    offline: bool
    uncached: list = field(default_factory=list)

    def required(self, filename: str, revision: str | None) -> Path:
        """A file of the repository at `revision`: downloaded once, then served from the cache."""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            return Path(hf_hub_download(self.name.repo_id, filename, revision=revision, cache_dir=self.cache,
                                        local_files_only=self.offline, library_name="mimmia"))
        except (OSError, ValueError, EntryNotFoundError) as e:  # huggingface_hub's errors, in words
            raise _explain(e, self.name, self.cache, self.offline, filename, revision) from e

    def optional(self, filename: str, commit: str) -> Path | None:
        """A file the repository may not have: None where it has none (or, offline, where it is not cached)."""
        from huggingface_hub import _CACHED_NO_EXIST, try_to_load_from_cache
        from huggingface_hub.errors import RemoteEntryNotFoundError

        if self.offline:
            found = try_to_load_from_cache(self.name.repo_id, filename, cache_dir=self.cache, revision=commit)
            if isinstance(found, str):
                return Path(found)
            if found is not _CACHED_NO_EXIST:  # not known to be absent: maybe never fetched
                self.uncached.append(filename)
            return None
        try:
            return self.required(filename, commit)
        except HubError as e:
            if isinstance(e.__cause__, RemoteEntryNotFoundError):
                return None
            raise

    def weights(self, commit: str) -> dict:
        """{file name: path} of the weights, in the loader's order: model.safetensors, sharded safetensors
        with their index, pytorch_model.bin (read with weights_only=True)."""
        if (single := self.optional(SAFETENSORS, commit)) is not None:
            return {SAFETENSORS: single}
        if (index := self.optional(INDEX, commit)) is not None:
            return {INDEX: index, **{shard: self.required(shard, commit) for shard in _shards(self.name, index)}}
        if (pickled := self.optional(PICKLE, commit)) is not None:
            return {PICKLE: pickled}
        where = (f"in the Hugging Face cache {self.cache}, and " + _OFFLINE_HOW.format(
            cmd=download_command(self.name), home=_home_hint())) if self.offline else "in the repository"
        raise HubError(f"{self.name.text}: no weights at commit {commit}: none of {', '.join(WEIGHT_FILES)} is "
                       f"{where}")


def _read_config(name: HubName, path: Path) -> dict:
    try:
        cfg = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HubError(f"{name.text}: its {path.name} is not readable JSON ({e})") from e
    if not isinstance(cfg, dict):
        raise HubError(f"{name.text}: its {path.name} is not a JSON object")
    return cfg


def _shards(name: HubName, index: Path) -> list:
    """The shard files an index names: plain file names in the repository, never a path outside it."""
    weight_map = _read_config(name, index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise HubError(f"{name.text}: {INDEX} has no weight_map object naming the shards")
    shards = sorted(set(map(str, weight_map.values())))
    bad = [s for s in shards if not s or s.startswith(("/", "\\")) or ".." in s.replace("\\", "/").split("/")]
    if bad:
        raise HubError(f"{name.text}: {INDEX} names shards outside the repository: {bad[:3]}; refused")
    return shards


def _check_mae(name: HubName, path: Path) -> str:
    """'transformers' or 'timm' from config.json, before any weights are fetched; else a HubError."""
    cfg = _read_config(name, path)
    if cfg.get("model_type") == "vit_mae":
        return "transformers"
    if "architecture" in cfg and "model_type" not in cfg:
        tag = str((cfg.get("pretrained_cfg") or {}).get("tag") or "")
        if tag and "mae" not in tag:
            raise HubError(f"{name.text} is not an MAE: timm weights {cfg['architecture']}.{tag}, not trained as a "
                           f"masked autoencoder; MAE encoders on the hub: {', '.join(_timm_mae_names())}")
        return "timm"
    arch = f" (architectures {cfg['architectures']})" if cfg.get("architectures") else ""
    raise HubError(f"{name.text} is not a ViTMAE or MAE repository: its config.json has model_type "
                   f"{cfg.get('model_type')!r}{arch}. mimmia reads transformers ViTMAE repositories "
                   f"(e.g. hf:facebook/vit-mae-base) and timm MAE encoders (e.g. timm:vit_base_patch16_224.mae)")


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def resolve(text: str) -> HubFiles:
    """The snapshot folder of a hub name (no ?settings) in the HF cache, fetching what is missing unless offline.

    config.json is fetched first and must describe a transformers ViTMAE or a timm MAE encoder, so nothing
    large is downloaded for a wrong repository; every later file comes from the same commit."""
    name = parse_hub_name(text)
    fetch = _Fetch(name, hub_cache_dir(), offline_mode())
    config = fetch.required(CONFIG, name.revision)
    commit = config.parent.name
    if not COMMIT.match(commit) or config.parent.parent.name != "snapshots":
        raise HubError(f"{text}: huggingface_hub returned {config}, not a file of a cache snapshot")
    paths = {CONFIG: config}
    if _check_mae(name, config) == "transformers" and (pre := fetch.optional(PREPROCESSOR, commit)) is not None:
        paths[PREPROCESSOR] = pre
    paths.update(fetch.weights(commit))
    return HubFiles(name, config.parent, commit, {f: sha256_file(p) for f, p in paths.items()}, fetch.uncached)


__all__ = ["KNOWN_MAES", "KNOWN_NOTE", "KnownMAE", "HubError", "HubName", "HubFiles", "is_hub_name",
           "parse_hub_name", "resolve", "hub_cache_dir", "offline_mode", "download_command", "sha256_file"]
