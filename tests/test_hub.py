"""Models by name (hf:ORG/NAME[@REV], timm:NAME), resolved in a local Hugging Face cache: no test reaches a hub.

The fixtures lay files out as huggingface_hub does: HF_HOME/hub/models--ORG--NAME/{blobs/<sha256>,
snapshots/<commit>/<file> -> ../../blobs/<sha256>, refs/main}."""
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mimmia_core import cli, hub
from mimmia_core.checkpoint import CheckpointError, MissingSettingsError, load_model
from mimmia_core.data import ArraySource
from mimmia_core.experiment import experiment_file_args
from mimmia_core.checkpoint import attach_decoder, describe_checkpoint
from mimmia_core.hub import HubError
from mimmia_core.config import MAEConfig
from mimmia_core.model import build_model
from mimmia_core.scores import ScoreSpec, score_images

transformers = pytest.importorskip("transformers")
huggingface_hub = pytest.importorskip("huggingface_hub")
httpx2 = pytest.importorskip("httpx2")

HF_ARCH = dict(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
               num_attention_heads=4, intermediate_size=64, decoder_hidden_size=24, decoder_num_hidden_layers=1,
               decoder_num_attention_heads=3, decoder_intermediate_size=48)
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
SPEC = ScoreSpec(mask_ratio=0.5, num_masks=2, seed=3)
TOKEN = "hf_thisIsNotARealTokenButMustNeverBeRecorded"


def cache_repo(hf_home: Path, repo_id: str, folder: Path, commit: str = COMMIT, ref: str | None = "main") -> Path:
    """Every file of `folder` cached as a snapshot of `repo_id` at `commit`, as huggingface_hub lays it out."""
    storage = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    for src in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = src.read_bytes()
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = storage / "snapshots" / commit / src.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref:
        (storage / "refs").mkdir(exist_ok=True)
        (storage / "refs" / ref).write_text(commit)  # huggingface_hub writes the hash without a newline
    return storage / "snapshots" / commit


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    """HF_HOME at an empty folder, offline. huggingface_hub reads its constants at import, so they are
    patched too: a slip that tried the network would fail at once rather than wait on a connection."""
    home = tmp_path / "hf_home"
    home.mkdir()
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(home / "hub"))
    return home


def make_hf_folder(path: Path, seed: int = 0, preprocessor: bool = True, **save) -> Path:
    """A small random transformers ViTMAEForPreTraining, saved by transformers itself."""
    torch.manual_seed(seed)
    model = transformers.ViTMAEForPreTraining(transformers.ViTMAEConfig(**HF_ARCH)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(path, **save)
    if preprocessor:
        transformers.ViTImageProcessor(image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3]).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    return make_hf_folder(tmp_path_factory.mktemp("hf") / "vit-mae-tiny")


@pytest.fixture(scope="module")
def images():
    return ArraySource(np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8), name="imgs")


def scores(loaded, source) -> np.ndarray:
    return score_images(loaded.require_decoder(), source, SPEC).per_mask


# --------------------------------------------------------------------------
# hf: names
# --------------------------------------------------------------------------
def test_hf_name_loads_from_the_cache_and_scores_as_the_folder(hf_home, hf_folder, images):
    snapshot = cache_repo(hf_home, "org/vit-mae-tiny", hf_folder)
    by_name = load_model("hf:org/vit-mae-tiny")
    by_path = load_model(hf_folder)
    assert by_name.path == "hf:org/vit-mae-tiny" and by_name.source_format == "hf_vitmae" and by_name.has_decoder
    assert by_name.config == by_path.config and by_name.fingerprint == by_path.fingerprint
    np.testing.assert_array_equal(scores(by_name, images), scores(by_path, images))

    h = by_name.provenance["hub"]
    assert h["repo_id"] == "org/vit-mae-tiny" and h["revision"] == COMMIT
    assert h["files"] == {f: hashlib.sha256((hf_folder / f).read_bytes()).hexdigest()
                          for f in ("config.json", "preprocessor_config.json", "model.safetensors")}
    assert (snapshot / "config.json").is_symlink()  # served from the cache layout, not the source folder
    described = json.dumps(describe_checkpoint(by_name))
    assert TOKEN not in described and "token" not in described.lower()

    pinned = load_model(f"hf:org/vit-mae-tiny@{COMMIT}")  # a commit hash needs no ref
    assert pinned.fingerprint == by_name.fingerprint and pinned.provenance["hub"]["requested_revision"] == COMMIT


def test_settings_after_a_hub_name(hf_home, hf_folder):
    cache_repo(hf_home, "org/vit-mae-tiny", hf_folder)
    loaded = load_model("hf:org/vit-mae-tiny?mean=0,0,0&std=1,1,1")
    assert loaded.config.mean == (0.0,) * 3 and loaded.provenance["settings_given"]["std"] == [1.0, 1.0, 1.0]
    assert load_model({"path": "hf:org/vit-mae-tiny", "config": {"norm_pix_loss": True}}).config.norm_pix_loss


def test_a_branch_or_tag_resolves_through_its_ref(hf_home, hf_folder, tmp_path):
    other = make_hf_folder(tmp_path / "v1", seed=1)
    cache_repo(hf_home, "org/vit-mae-tiny", hf_folder)
    cache_repo(hf_home, "org/vit-mae-tiny", other, commit=OTHER_COMMIT, ref="v1")
    main, v1 = load_model("hf:org/vit-mae-tiny"), load_model("hf:org/vit-mae-tiny@v1")
    assert main.provenance["hub"]["revision"] == COMMIT and v1.provenance["hub"]["revision"] == OTHER_COMMIT
    assert v1.provenance["hub"]["requested_revision"] == "v1" and v1.fingerprint == load_model(other).fingerprint
    assert v1.fingerprint != main.fingerprint


def test_sharded_weights_with_their_index(hf_home, tmp_path, images):
    folder = make_hf_folder(tmp_path / "sharded", seed=1, max_shard_size="20KB")
    assert (folder / "model.safetensors.index.json").exists() and not (folder / "model.safetensors").exists()
    cache_repo(hf_home, "org/sharded", folder)
    loaded = load_model("hf:org/sharded")
    assert "model.safetensors.index.json" in loaded.provenance["hub"]["files"]
    assert len(loaded.provenance["hub"]["files"]) > 3  # config, preprocessor, index and its shards
    np.testing.assert_array_equal(scores(loaded, images), scores(load_model(folder), images))


def test_a_pickled_bin_goes_through_the_weights_only_loader(hf_home, hf_folder, tmp_path):
    from safetensors.torch import load_file
    folder = tmp_path / "bin"
    folder.mkdir()
    for f in ("config.json", "preprocessor_config.json"):
        shutil.copy(hf_folder / f, folder / f)
    torch.save(load_file(str(hf_folder / "model.safetensors")), folder / "pytorch_model.bin")
    cache_repo(hf_home, "org/bin", folder)
    loaded = load_model("hf:org/bin")
    assert loaded.fingerprint == load_model(hf_folder).fingerprint
    assert set(loaded.provenance["hub"]["files"]) == {"config.json", "preprocessor_config.json", "pytorch_model.bin"}


# --------------------------------------------------------------------------
# timm: names
# --------------------------------------------------------------------------
def test_timm_name_resolves_through_timms_registry(hf_home, tmp_path, images):
    """timm:vit_base_patch16_224.mae -> timm's registry names the hub repository timm/vit_base_patch16_224.mae;
    its config.json (architecture + pretrained_cfg) and official-key weights come from the HF cache. The weights
    here are tiny (12 heads of width 4), the head count still comes from timm's architecture."""
    from timm.models.vision_transformer import VisionTransformer
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=16, patch_size=4, embed_dim=48, depth=2, num_heads=12, num_classes=0)
    folder = tmp_path / "timm"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "architecture": "vit_base_patch16_224", "num_classes": 0, "num_features": 48, "global_pool": "token",
        "pretrained_cfg": {"tag": "mae", "input_size": [3, 16, 16], "mean": [0.4, 0.4, 0.4], "std": [0.3, 0.3, 0.3],
                           "num_classes": 0, "license": "cc-by-nc-4.0"}}))
    cache_repo(hf_home, "timm/vit_base_patch16_224.mae", folder)

    enc = load_model("timm:vit_base_patch16_224.mae")
    assert enc.source_format == "timm" and not enc.has_decoder
    assert enc.config.num_heads == 12 and enc.config.mean == (0.4,) * 3
    assert enc.provenance["hub"]["repo_id"] == "timm/vit_base_patch16_224.mae"
    assert enc.provenance["hub"]["timm_name"] == "vit_base_patch16_224.mae"
    with pytest.raises(CheckpointError, match="timm:vit_base_patch16_224.mae is encoder-only"):
        enc.require_decoder()
    by_path = load_model(folder)
    assert enc.fingerprint == by_path.fingerprint

    # the paper's encoder-only setting: a shadow's decoder on the released encoder, the same by name or path
    shadow = build_model(MAEConfig(img_size=16, patch_size=4, in_chans=3, embed_dim=48, depth=1, num_heads=4,
                                   decoder_embed_dim=24, decoder_depth=1, decoder_num_heads=3), seed=1)
    from mimmia_core.checkpoint import LoadedModel
    donor = LoadedModel(shadow.eval(), "shadow", "mimmia")
    np.testing.assert_array_equal(scores(attach_decoder(enc, donor), images),
                                  scores(attach_decoder(by_path, donor), images))


def test_timm_names_that_are_not_maes(hf_home):
    with pytest.raises(HubError, match=r"timm:vit_base_patch16_224 is not an MAE: .*augreg.*vit_base_patch16_224\.mae"):
        load_model("timm:vit_base_patch16_224")  # timm's default tag: a supervised classifier
    with pytest.raises(HubError, match="timm knows no pretrained model 'no_such_vit'"):
        load_model("timm:no_such_vit")
    with pytest.raises(HubError, match=r"Invalid pretrained tag \(nope\)"):
        load_model("timm:vit_base_patch16_224.nope")


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------
def test_a_revision_not_in_the_cache(hf_home, hf_folder):
    cache_repo(hf_home, "org/vit-mae-tiny", hf_folder)
    with pytest.raises(HubError) as e:
        load_model("hf:org/vit-mae-tiny@v2")
    text = str(e.value)
    assert text.startswith("hf:org/vit-mae-tiny@v2: revision 'v2' of org/vit-mae-tiny is not in the Hugging Face "
                           "cache")
    assert "main -> 0123456789ab" in text  # what is cached instead
    assert "HF_HUB_OFFLINE=1" in text and "hf download org/vit-mae-tiny --revision v2" in text
    assert f"HF_HOME={hf_home}" in text
    with pytest.raises(HubError, match=f"revision '{OTHER_COMMIT}' of org/vit-mae-tiny is not in the"):
        load_model(f"hf:org/vit-mae-tiny@{OTHER_COMMIT}")


def test_a_repository_that_is_not_an_mae(hf_home, tmp_path):
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(transformers.BertConfig(hidden_size=8, num_hidden_layers=1,
                                                                num_attention_heads=2).to_json_string())
    cache_repo(hf_home, "org/bert-tiny", folder)  # no weights cached: the check comes first
    with pytest.raises(HubError, match=r"hf:org/bert-tiny is not a ViTMAE or MAE repository: its config.json has "
                                       r"model_type 'bert'.*hf:facebook/vit-mae-base"):
        load_model("hf:org/bert-tiny")


def test_offline_with_nothing_cached(hf_home):
    with pytest.raises(HubError) as e:
        load_model("hf:facebook/vit-mae-base")
    text = str(e.value)
    assert text.startswith(f"hf:facebook/vit-mae-base: facebook/vit-mae-base is not in the Hugging Face cache "
                           f"{hf_home / 'hub'}")
    assert "offline mode is on (HF_HUB_OFFLINE=1)" in text
    assert "python -m mimmia_core inspect hf:facebook/vit-mae-base" in text
    assert "hf download facebook/vit-mae-base --include config.json" in text


def test_missing_files(hf_home, hf_folder, tmp_path):
    folder = tmp_path / "noweights"
    folder.mkdir()
    shutil.copy(hf_folder / "config.json", folder / "config.json")
    cache_repo(hf_home, "org/noweights", folder)
    with pytest.raises(HubError, match=r"no weights at commit 0123.*: none of model.safetensors, "
                                       r"model.safetensors.index.json, pytorch_model.bin is in the Hugging Face cache"):
        load_model("hf:org/noweights")

    folder = tmp_path / "nopre"
    folder.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(hf_folder / f, folder / f)
    cache_repo(hf_home, "org/nopre", folder)
    with pytest.raises(MissingSettingsError) as e:
        load_model("hf:org/nopre")
    assert e.value.path == "hf:org/nopre" and set(e.value.missing) == {"mean", "std"}
    assert "preprocessor_config.json is not in the cache" in str(e.value)
    assert "supply them as hf:org/nopre?mean=" in str(e.value)


def test_bad_names():
    for name, match in [("hf:justaname", "not a Hugging Face repository name"),
                        ("hf:org/name@", "nothing after '@'"), ("timm:org/name", "timm:MODEL_NAME")]:
        with pytest.raises(HubError, match=match):
            load_model(name)
    assert not hub.is_hub_name("models/target") and hub.is_hub_name("hf:org/name?num_heads=2")


def test_offline_mode_and_cache_are_read_when_resolving(monkeypatch, tmp_path):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    assert not hub.offline_mode()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.offline_mode()
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert hub.hub_cache_dir() == tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert hub.hub_cache_dir() == tmp_path / "elsewhere"


# --------------------------------------------------------------------------
# Online, through a stand-in for hf_hub_download: the library's own errors, in words
# --------------------------------------------------------------------------
def http_error(cls, status: int):
    request = httpx2.Request("HEAD", "https://huggingface.co/org/x/resolve/main/config.json")
    return cls(f"{status} Client Error", response=httpx2.Response(status, request=request))


@pytest.fixture
def online(hf_home, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return monkeypatch


@pytest.mark.parametrize("error, status, match", [
    ("GatedRepoError", 401, r"org/x is a gated repository: accept its conditions on https://huggingface.co/org/x "
                            r"and log in once with `hf auth login`, or set HF_TOKEN"),
    ("RepositoryNotFoundError", 404, "no repository org/x on the Hugging Face hub"),
    ("RevisionNotFoundError", 404, "org/x has no revision 'v3'"),
    ("RemoteEntryNotFoundError", 404, "org/x has no config.json, so it is not a transformers ViTMAE or timm"),
])
def test_hub_errors_in_words(online, error, status, match):
    def refuse(repo_id, filename, **kw):
        assert kw["local_files_only"] is False and "token" not in kw  # the library finds the token itself
        raise http_error(getattr(huggingface_hub.errors, error), status)
    online.setattr(huggingface_hub, "hf_hub_download", refuse)
    with pytest.raises(HubError, match=match):
        load_model("hf:org/x@v3")


def test_no_network_names_the_cache(online):
    def unreachable(repo_id, filename, **kw):
        raise huggingface_hub.errors.LocalEntryNotFoundError("An error happened while trying to locate the file")
    online.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(HubError, match=r"org/x is not in the Hugging Face cache .*cannot be reached.*HF_HUB_OFFLINE=1"):
        load_model("hf:org/x")


def test_online_fetches_only_what_it_reads(online, hf_home, hf_folder, tmp_path):
    """A repository without safetensors: config, preprocessor, then model.safetensors (404), the index (404)
    and pytorch_model.bin, all pinned to the commit that config.json resolved to."""
    from safetensors.torch import load_file
    repo = tmp_path / "repo"
    repo.mkdir()
    for f in ("config.json", "preprocessor_config.json"):
        shutil.copy(hf_folder / f, repo / f)
    torch.save(load_file(str(hf_folder / "model.safetensors")), repo / "pytorch_model.bin")
    (repo / "tf_model.h5").write_bytes(b"never fetched")
    asked = []

    def fake_download(repo_id, filename, revision=None, cache_dir=None, local_files_only=False, **kw):
        asked.append((filename, revision))
        if not (repo / filename).exists():
            raise http_error(huggingface_hub.errors.RemoteEntryNotFoundError, 404)
        one = tmp_path / "one" / filename
        one.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / filename, one)
        snap = cache_repo(Path(cache_dir).parent, repo_id, one.parent, commit=COMMIT)
        shutil.rmtree(one.parent)
        return str(snap / filename)
    online.setattr(huggingface_hub, "hf_hub_download", fake_download)
    loaded = load_model("hf:org/binonly")
    assert asked == [("config.json", None), ("preprocessor_config.json", COMMIT), ("model.safetensors", COMMIT),
                     ("model.safetensors.index.json", COMMIT), ("pytorch_model.bin", COMMIT)]
    assert loaded.fingerprint == load_model(hf_folder).fingerprint
    assert set(loaded.provenance["hub"]["files"]) == {"config.json", "preprocessor_config.json", "pytorch_model.bin"}


# --------------------------------------------------------------------------
# Wherever a model path is accepted
# --------------------------------------------------------------------------
def test_cli_inspect_and_flags(hf_home, hf_folder, tmp_path, capsys):
    cache_repo(hf_home, "org/vit-mae-tiny", hf_folder)
    assert cli.main(["inspect", "hf:org/vit-mae-tiny"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["path"] == "hf:org/vit-mae-tiny" and out["provenance"]["hub"]["revision"] == COMMIT

    nopre = tmp_path / "nopre"
    nopre.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(hf_folder / f, nopre / f)
    cache_repo(hf_home, "org/nopre", nopre)
    assert cli.main(["inspect", "hf:org/nopre"]) == 2
    assert "In this command: inspect PATH 'hf:org/nopre?mean=...&std=...'" in capsys.readouterr().err
    assert cli.main(["inspect", "hf:org/absent"]) == 2
    assert "offline mode is on (HF_HUB_OFFLINE=1)" in capsys.readouterr().err


def test_experiment_json_keeps_names(tmp_path):
    (tmp_path / "exp.json").write_text(json.dumps({
        "target": "hf:facebook/vit-mae-base@main", "shadow": {"path": "timm:vit_base_patch16_224.mae"},
        "references": ["hf:org/ref?num_heads=2"]}))
    args = experiment_file_args(tmp_path / "exp.json")
    assert args["target"] == "hf:facebook/vit-mae-base@main" and args["references"] == ["hf:org/ref?num_heads=2"]
    assert args["shadow"] == {"path": "timm:vit_base_patch16_224.mae"}


def test_known_maes():
    for name, known in hub.KNOWN_MAES.items():
        parsed = hub.parse_hub_name(name)  # every timm name is in timm's registry with hub weights
        assert known.has_decoder == (parsed.scheme == "hf") and "parameters" in known.caption()


def test_models_page_by_name(hf_home, hf_folder, monkeypatch):
    from streamlit.testing.v1 import AppTest
    repo = Path(__file__).resolve().parent.parent
    monkeypatch.syspath_prepend(str(repo))  # the page imports app_pages.common, as under app.py
    cache_repo(hf_home, "org/vit-mae-tiny", hf_folder)
    at = AppTest.from_file(str(repo / "app_pages" / "models.py"), default_timeout=120)
    at.session_state["models_source"] = "hub"
    at.run()
    assert not at.exception and not at.error
    assert at.selectbox(key="models_hub_pick").options[:3] == list(hub.KNOWN_MAES)[:3]
    assert any("112 M parameters" in c.value and "HF_HUB_OFFLINE=1" in c.value for c in at.caption)
    at.button(key="models_hub_load").click().run()  # offline, nothing cached: the message, not a traceback
    assert not at.exception and "offline mode is on (HF_HUB_OFFLINE=1)" in at.error[0].value

    at.selectbox(key="models_hub_pick").set_value(at.selectbox(key="models_hub_pick").options[-1]).run()
    at.text_input(key="models_hub_name").input("hf:org/vit-mae-tiny").run()
    at.button(key="models_hub_load").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [m.value for m in at.metric if m.label == "Decoder"] == ["present"]
    assert any(f"at commit {COMMIT}" in c.value for c in at.caption)
