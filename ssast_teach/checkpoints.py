"""Chapter 08, checkpoints: the released SSAST models, read safely, saved in three formats.

* :data:`REGISTRY`: the 13 files the official README links (7 released models and the 6
  ablation models of the paper's Table 2), with their published numbers, read from
  ``resources/published_results.csv``.
* :func:`download` puts one into the cache (``$SSAST_TEACH_CACHE``, else
  ``~/.cache/ssast-teach/checkpoints``), records its size and sha256 next to it at the first
  download and checks the cached file against that record at every later use.
* :func:`load_state_dict` reads a file with ``torch.load(weights_only=True)``: a pickle that
  would run code is refused, never executed. It accepts official checkpoints (``module.``
  prefix or not, pretraining or fine-tuned), this library's own files and safetensors files.
* :func:`load_pretrained` / :func:`load_for_finetuning` build an :class:`SSASTModel` whose size,
  patch shape and pretraining input size come from the tensors; loading is strict.
* :func:`save_checkpoint` (library format, read back by :func:`load_checkpoint`),
  :func:`save_official` (loads in the official code), :func:`export_safetensors`;
  :func:`inspect` summarises any of them.
* ``python -m ssast_teach.checkpoints list|download|inspect``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import os
import sys
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from ssast_teach.download import (
    DownloadError,
    atomic_write,
    download_file,
    mismatch,
    move_aside,
    rank_zero_first,
    sha256_of,
)
from ssast_teach.model import (
    MODEL_SIZES,
    SSASTConfig,
    SSASTModel,
    infer_size,
    load_strict,
    official_strides,
    strip_module_prefix,
)

__all__ = [
    "REGISTRY",
    "TASKS",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointNotFoundError",
    "CheckpointSummary",
    "DownloadError",
    "cached",
    "default_cache_dir",
    "download",
    "export_safetensors",
    "inspect",
    "load_checkpoint",
    "load_for_finetuning",
    "load_pretrained",
    "load_state_dict",
    "main",
    "make_official_like",
    "model_config",
    "official_manifest",
    "published_results",
    "save_checkpoint",
    "save_official",
]

log = logging.getLogger(__name__)

FORMAT = "ssast-teach"  # the "format" entry of this library's own checkpoints
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and what is wrong."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No file at the path, and not a registry name either; or a registry name whose cached file
    is missing or fails its check (then moved aside)."""


# ---------------------------------------------------------------------------------------------
# The registry: what the official README releases, with the paper's numbers

TASKS = ("as20k_map", "esc50_acc", "ks2_acc", "ks1_acc", "sid_acc", "er_acc")
REFERENCE = "SSAST-Base-Patch-400"  # the ablation's base model (paper Table 2, first SSL row)

# The README's Dropbox direct links ("wget works"); OneDrive/Weiyun mirrors are linked there too.
_URLS = {
    "SSAST-Base-Patch-400": "https://www.dropbox.com/s/ewrzpco95n9jdz6/SSAST-Base-Patch-400.pth?dl=1",
    "SSAST-Base-Frame-400": "https://www.dropbox.com/s/nx6nl4d4bl71sm8/SSAST-Base-Frame-400.pth?dl=1",
    "SSAST-Base-Patch-250": "https://www.dropbox.com/s/mxrm9qog6aj8hif/SSAST-Base-Patch-250.pth?dl=1",
    "SSAST-Base-Frame-250": "https://www.dropbox.com/s/4e6l7ulhwrfoana/SSAST-Base-Frame-250.pth?dl=1",
    "SSAST-Small-Patch-400": "https://www.dropbox.com/s/i24w446rl9pkf05/SSAST-Small-Patch-400.pth?dl=1",
    "SSAST-Tiny-Patch-400": "https://www.dropbox.com/s/fkbtf78y94113wz/SSAST-Tiny-Patch-400.pth?dl=1",
    "SSAST-Tiny-Frame-400": "https://www.dropbox.com/s/rx7g60ruzawffzv/SSAST-Tiny-Frame-400.pth?dl=1",
    "audio_model_100m": "https://www.dropbox.com/s/0oyrtfbjzkwho2p/audio_model_100m.pth?dl=1",
    "audio_model_dis": "https://www.dropbox.com/s/znuzgwf2zvrpjkr/audio_model_dis.pth?dl=1",
    "audio_model_gen": "https://www.dropbox.com/s/u6ws5fjrid10x4p/audio_model_gen.pth?dl=1",
    "audio_model_as20k": "https://www.dropbox.com/s/y6x2ck2ca3tb7d9/audio_model_as20k.pth?dl=1",
    "audio_model_as": "https://www.dropbox.com/s/m9p782df3faql1q/audio_model_as.pth?dl=1",
    "audio_model_librispeech": "https://www.dropbox.com/s/f4bn2qelu3m8ksu/audio_model_librispeech.pth?dl=1",
}
_SIZE_BY_PARAMS = {6: "tiny", 23: "small", 89: "base"}  # the README's "Model Size" column


@dataclass(frozen=True)
class CheckpointInfo:
    """One released file. Numbers are the paper's/README's (None: not published)."""

    name: str
    filename: str
    url: str
    kind: str  # "released" or "ablation"
    model_size: str  # tiny / small / base
    params_millions: int
    fshape: int
    tshape: int
    masked_patches: int
    pretrain_data: str
    objective: str  # joint / discriminative / generative
    avg_audio: float | None
    avg_speech: float | None
    results: tuple[tuple[str, float | None], ...]  # (task, score) in TASKS order
    ablation_id: int | None = None
    changes: str | None = None  # for an ablation model: the one factor it changes, and from what

    @property
    def geometry(self) -> str:
        return "patch" if (self.fshape, self.tshape) == (16, 16) else "frame"

    @property
    def published(self) -> dict[str, float | None]:
        """Per-task numbers (AS-20K mAP, accuracies in %) and the README averages."""
        return {**dict(self.results), "avg_audio": self.avg_audio, "avg_speech": self.avg_speech}


def _number(text: str) -> float | None:
    return float(text) if text.strip() else None


def published_results() -> list[dict[str, str]]:
    """The rows of ``resources/published_results.csv`` (all models, baselines included)."""
    text = resources.files("ssast_teach").joinpath("resources/published_results.csv").read_text()
    return list(csv.DictReader(io.StringIO(text)))


def _ablation_change(row: Mapping[str, str], reference: Mapping[str, str]) -> str:
    labels = {
        "masked_patches": "masked patches",
        "objective": "objective",
        "pretrain_data": "pretraining data",
    }
    changed = [
        f"{label}: {row[key]} instead of {reference[key]}"
        for key, label in labels.items()
        if row[key] != reference[key]
    ]
    return "; ".join(changed) + f" (otherwise as {REFERENCE})"


def _build_registry() -> dict[str, CheckpointInfo]:
    rows = {r["model"]: r for r in published_results()}
    registry = {}
    for name, url in _URLS.items():
        row = rows[name]
        ablation = row["kind"].startswith("ablation")
        registry[name] = CheckpointInfo(
            name=name,
            filename=f"{name}.pth",
            url=url,
            kind="ablation" if ablation else "released",
            model_size=_SIZE_BY_PARAMS[int(row["params_millions"])],
            params_millions=int(row["params_millions"]),
            fshape=int(row["fshape"]),
            tshape=int(row["tshape"]),
            masked_patches=int(row["masked_patches"]),
            pretrain_data=row["pretrain_data"],
            objective=row["objective"],
            avg_audio=_number(row["avg_audio"]),
            avg_speech=_number(row["avg_speech"]),
            results=tuple((task, _number(row[task])) for task in TASKS),
            ablation_id=int(row["kind"].split("-")[1]) if ablation else None,
            changes=_ablation_change(row, rows[REFERENCE]) if ablation else None,
        )
    return registry


REGISTRY: dict[str, CheckpointInfo] = _build_registry()


# ---------------------------------------------------------------------------------------------
# Cache and download


def default_cache_dir() -> Path:
    """Where downloaded checkpoints live: ``$SSAST_TEACH_CACHE``, else ``~/.cache/ssast-teach/checkpoints``."""
    env = os.environ.get("SSAST_TEACH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ssast-teach" / "checkpoints"


def _info(name: str) -> CheckpointInfo:
    if name not in REGISTRY:
        raise CheckpointError(
            f"{name!r} is not a released checkpoint; known: {', '.join(REGISTRY)}"
        )
    return REGISTRY[name]


def _record_of(path: Path) -> Path:
    """The sidecar ``<file>.json`` of a cached checkpoint: its url, size and sha256."""
    return path.with_name(path.name + ".json")


def _read_record(path: Path) -> dict | None:
    record = _record_of(path)
    if not record.exists():
        return None
    try:
        entry = json.loads(record.read_text(encoding="utf-8"))
        return {"size": int(entry["size"]), "sha256": str(entry["sha256"]).lower()}
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"{record}: expected a JSON record {{'size', 'sha256'}} of {path.name} ({err}); "
            f"move it away to record {path} again"
        ) from None


def _write_record(path: Path, url: str) -> None:
    entry = {"url": url, "size": path.stat().st_size, "sha256": sha256_of(path)}
    text = json.dumps(entry, indent=1)
    atomic_write(_record_of(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _check_cached(path: Path, url: str, sha256: str | None) -> str | None:
    """None when cached ``path`` is the file its record (or ``sha256``, when given) describes;
    else what is wrong, after moving it aside. A file without a record (a first download, or a
    file saved by hand) is recorded as it is."""
    record = _read_record(path)
    if record is None and sha256 is None:
        _write_record(path, url)
        log.info("%s: recorded its size and sha256 in %s", path, _record_of(path))
        return None
    expected = {"sha256": sha256} if sha256 is not None else record
    problem = mismatch(path, **expected)
    if problem is None:
        if sha256 is not None and (record is None or record["sha256"] != sha256):
            _write_record(path, url)  # it matches the pin: the record follows the pin
        return None
    aside = move_aside(path)
    kind = "recorded" if sha256 is None else "pinned"
    return f"{path} is not the {kind} file ({problem}); moved it to {aside}"


def download(
    name: str,
    cache_dir: str | Path | None = None,
    *,
    sha256: str | None = None,
    progress: bool = True,
) -> Path:
    """The cached file of registry entry ``name``, downloaded first if absent.

    The official files have no published checksum, so the first download records its size and
    sha256 in ``<file>.json`` next to it, and every later call checks the cached file against
    that record (or against ``sha256`` when given). A file that fails is moved aside
    (``<file>.rejected-<time>``), never used, and downloaded again: the new download must match.
    Offline, :class:`DownloadError` says which URL to fetch by hand and where to save it; a file
    saved there by hand is recorded at its first use. Under ``torchrun`` process 0 downloads
    while the others wait (:func:`~ssast_teach.download.rank_zero_first`).
    """
    info = _info(name)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = folder / info.filename
    sha256 = sha256.lower() if sha256 is not None else None
    with rank_zero_first(f"checkpoint {name}"):
        if path.is_file():
            problem = _check_cached(path, info.url, sha256)
            if problem is None:
                return path
            log.warning("%s; downloading it again", problem)
        record = _read_record(path)
        expected = {"sha256": sha256} if sha256 is not None else record or {}
        download_file(info.url, path, **expected, progress=progress)
        if record is None or sha256 not in (None, record["sha256"]):
            _write_record(path, info.url)
        return path


def cached(name: str, cache_dir: str | Path | None = None) -> Path | None:
    """The cached file of registry entry ``name``, verified as :func:`download` verifies it, or
    None when it is not in the cache; nothing is downloaded. A cached file that fails its
    record is moved aside and :class:`CheckpointNotFoundError` says what was expected and found.
    """
    info = _info(name)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = folder / info.filename
    if not path.is_file():
        return None
    problem = _check_cached(path, info.url, None)
    if problem is not None:
        raise CheckpointNotFoundError(
            f"{name}: {problem}; run `python -m ssast_teach.checkpoints download {name}` to "
            "download it again"
        )
    return path


def _resolve(name_or_path: str | Path, *, fetch: bool) -> Path:
    """A registry name -> its cached, verified file (downloaded if ``fetch``); anything else ->
    a path."""
    if isinstance(name_or_path, str) and name_or_path in REGISTRY:
        path = download(name_or_path) if fetch else cached(name_or_path)
        if path is None:
            raise CheckpointNotFoundError(
                f"{name_or_path}: not in the cache ({default_cache_dir()}); run "
                f"`python -m ssast_teach.checkpoints download {name_or_path}` first"
            )
        return path
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise CheckpointNotFoundError(
            f"{path}: no such checkpoint file (nor a registry name: {', '.join(REGISTRY)})"
        )
    return path


# ---------------------------------------------------------------------------------------------
# Reading any checkpoint safely

_SSAST_TOP = ("p_input_fdim", "p_input_tdim", "mask_embed")
_SSAST_PREFIXES = ("v.", "cpredlayer.", "gpredlayer.", "mlp_head.")


@dataclass
class _Loaded:
    state_dict: dict[str, Tensor]  # keys without "module."
    fmt: str  # "official" (plain torch.save), "ssast-teach" or "safetensors"
    prefixed: bool  # did the keys carry DataParallel's "module."?
    config: dict | None  # the library's model config, when the file has one
    extra: dict | None = None

    @property
    def kind(self) -> str:
        return "fine-tuned" if "mlp_head.1.weight" in self.state_dict else "pretraining"


def _is_safetensors(path: Path) -> bool:
    # safetensors: an 8-byte little-endian header length, then a JSON header "{...".
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _torch_load(path: Path, map_location) -> object:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for bad files; all mean "unusable"
        text = str(err)
        if "unsupported global" in text.lower():
            culprit = next((ln for ln in text.splitlines() if "GLOBAL" in ln.upper()), "")
            raise CheckpointError(
                f"{path}: refused: the file is a pickle that contains code or Python objects "
                f"other than tensors, which torch.load(weights_only=True) will not run "
                f"({culprit.strip()}). Nothing in it was executed. Only load such a file "
                "with weights_only=False if you trust who made it."
            ) from None
        raise CheckpointError(
            f"{path}: cannot be read as a torch checkpoint; it is truncated, corrupt or not a "
            f"checkpoint ({type(err).__name__}: {text.splitlines()[0] if text else ''}). "
            "Delete it and download it again."
        ) from err


def _safetensors_load(path: Path, map_location) -> tuple[dict[str, Tensor], dict | None]:
    """The tensors of a safetensors file, and the config our export puts in its metadata."""
    device = str(map_location) if isinstance(map_location, str | torch.device) else "cpu"
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata() or {}
    except Exception as err:  # safetensors' own error types vary between versions
        raise CheckpointError(
            f"{path}: cannot be read as safetensors (truncated or corrupt?): {err}"
        ) from err
    config = (
        json.loads(meta["config"]) if meta.get("format") == FORMAT and "config" in meta else None
    )
    return tensors, config


def _read(path: Path, map_location="cpu") -> _Loaded:
    """Read any accepted file safely and check that it holds SSAST tensors."""
    if not path.is_file():
        raise CheckpointNotFoundError(f"{path}: no such checkpoint file")
    config = extra = None
    if _is_safetensors(path):
        obj, config = _safetensors_load(path, map_location)
        fmt = "safetensors"
    else:
        obj = _torch_load(path, map_location)
        fmt = "official"
        if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
            fmt, config, extra = FORMAT, obj.get("config"), obj.get("extra")
            obj = obj.get("model")
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path}: not a state dict (a mapping of parameter names to tensors); "
            f"it holds a {type(obj).__name__}"
        )
    not_tensors = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, Tensor))]
    if not_tensors or not obj:
        raise CheckpointError(
            f"{path}: not a state dict (a mapping of parameter names to tensors); "
            + (f"entries that are not tensors: {not_tensors[:5]}" if obj else "it is empty")
        )
    prefixed = [k.startswith("module.") for k in obj]
    if any(prefixed) and not all(prefixed):
        raise CheckpointError(
            f"{path}: some keys start with 'module.' and some do not, e.g. "
            f"{[k for k in obj if not k.startswith('module.')][:3]}"
        )
    sd = strip_module_prefix(obj)
    foreign = [k for k in sd if k not in _SSAST_TOP and not k.startswith(_SSAST_PREFIXES)]
    required = ("v.patch_embed.proj.weight", "v.pos_embed")
    absent = [k for k in required if k not in sd]
    if foreign or absent:
        raise CheckpointError(
            f"{path}: not an SSAST checkpoint (another architecture?): "
            + (f"keys SSAST does not have: {foreign[:5]}" if foreign else "")
            + ("; " if foreign and absent else "")
            + (f"missing {absent}" if absent else "")
        )
    return _Loaded(sd, fmt, all(prefixed), config, extra)


def load_state_dict(path: str | Path, map_location="cpu") -> dict[str, Tensor]:
    """The tensors of an SSAST checkpoint, keys without ``module.``; never runs code from it.

    Accepts official pretraining and fine-tuned checkpoints (``module.`` or not), this library's
    checkpoints and safetensors files. Anything else is a :class:`CheckpointError`.
    """
    return _read(Path(path).expanduser(), map_location).state_dict


def _strict(model: SSASTModel, sd: Mapping[str, Tensor], path: Path) -> SSASTModel:
    try:
        load_strict(model, sd)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    return model


def _from_config(loaded: _Loaded, path: Path) -> SSASTModel:
    """Rebuild the model a library checkpoint (or our safetensors export) was saved from."""
    cfg = dict(loaded.config)
    n_classes, pooling = cfg.pop("n_classes", None), cfg.pop("pooling", "avgtok")
    try:
        model = SSASTModel(SSASTConfig(**cfg), n_classes=n_classes, pooling=pooling)
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"{path}: its stored config {loaded.config} is not usable: {err}"
        ) from None
    return _strict(model, loaded.state_dict, path)


def _place(model: SSASTModel, device) -> SSASTModel:
    return model if device is None else model.to(device)


def load_pretrained(
    name_or_path: str | Path, map_location="cpu", device: str | torch.device | None = None
) -> SSASTModel:
    """The pretraining model (encoder and both heads) of a checkpoint, loaded strictly.

    A registry name is looked up in the cache and downloaded if missing. Size, ``fshape x
    tshape`` and the pretraining input size (``p_input_fdim x p_input_tdim``) come from the file.
    """
    path = _resolve(name_or_path, fetch=True)
    loaded = _read(path, map_location)
    if loaded.kind != "pretraining":
        raise CheckpointError(
            f"{path}: a fine-tuned checkpoint (v.* and mlp_head.*, no pretraining heads); "
            "load it with load_for_finetuning"
        )
    if loaded.config is not None:
        return _place(_from_config(loaded, path), device)
    try:
        model = SSASTModel.from_pretrained_state_dict(loaded.state_dict)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    return _place(model, device)


def load_checkpoint(
    path: str | Path, map_location="cpu", device: str | torch.device | None = None
) -> tuple[SSASTModel, dict]:
    """A model saved by :func:`save_checkpoint` (pretraining or fine-tuning), and its ``extra``."""
    path = Path(path).expanduser()
    loaded = _read(path, map_location)
    if loaded.fmt != FORMAT:
        raise CheckpointError(
            f"{path}: not a {FORMAT} checkpoint (it is {loaded.fmt}); use load_pretrained or "
            "load_for_finetuning"
        )
    return _place(_from_config(loaded, path), device), dict(loaded.extra or {})


def load_for_finetuning(
    name_or_path: str | Path,
    *,
    n_classes: int | None = None,
    fstride: int | None = None,
    tstride: int | None = None,
    input_fdim: int | None = None,
    input_tdim: int | None = None,
    pooling: str | None = None,
    new_head: bool = False,
    pos_embed_quirk: bool = True,
    map_location="cpu",
    device: str | torch.device | None = None,
) -> SSASTModel:
    """A fine-tuning model (encoder + ``mlp_head``) from a pretraining or fine-tuned checkpoint.

    Pretraining checkpoint: read safely, then built by :meth:`SSASTModel.for_finetuning` with
    the same keywords (official strides, ``input_fdim`` 128 and the pretraining input length by
    default; ``pos_embed_quirk`` as there), a new ``n_classes`` head.

    Fine-tuned checkpoint (official ``v.*`` + ``mlp_head.*``, or the library's): loaded as is, so
    the strides and ``input_tdim`` must give its patch grid (the library format stores them;
    for an official file ``input_tdim`` defaults to the shortest input with that many patches).
    ``n_classes`` must match the head (``None``: take it from the file) unless ``new_head=True``,
    which puts a fresh head with ``n_classes`` outputs on the fine-tuned encoder.
    """
    path = _resolve(name_or_path, fetch=True)
    loaded = _read(path, map_location)
    if n_classes is None and (new_head or loaded.kind == "pretraining"):
        raise ValueError("n_classes is required for a new head")
    if loaded.kind == "pretraining":
        try:
            model = SSASTModel.for_finetuning(
                loaded.state_dict,
                n_classes=n_classes,
                fstride=fstride,
                tstride=tstride,
                input_fdim=128 if input_fdim is None else input_fdim,
                input_tdim=input_tdim,
                pooling=pooling or "avgtok",
                size=None if loaded.config is None else loaded.config["size"],
                pos_embed_quirk=pos_embed_quirk,
            )
        except ValueError as err:
            raise CheckpointError(f"{path}: {err}") from None
        return _place(model, device)
    asked = {"fstride": fstride, "tstride": tstride, "input_fdim": input_fdim}
    asked |= {"input_tdim": input_tdim, "pooling": pooling}
    model = _finetuned_model(loaded, path, n_classes, new_head, asked)
    return _place(model, device)


def _finetuned_model(
    loaded: _Loaded, path: Path, n_classes: int | None, new_head: bool, asked: dict
) -> SSASTModel:
    """A fine-tuned checkpoint as it is: its geometry comes from the stored config, else from
    ``asked`` (official strides by default), and must reproduce its pos_embed length."""
    sd = loaded.state_dict
    stored = dict(loaded.config or {})
    clash = [
        f"{k}={v} (file: {stored[k]})"
        for k, v in asked.items()
        if v is not None and k in stored and stored[k] != v
    ]
    if clash:
        raise CheckpointError(f"{path}: was fine-tuned with other settings: {', '.join(clash)}")
    settings = {**{k: v for k, v in asked.items() if v is not None}, **stored}
    _, _, fshape, tshape = sd["v.patch_embed.proj.weight"].shape
    size = stored.get("size") or _size_of(sd, path)
    fs, ts = official_strides(fshape, tshape)
    fs, ts = settings.get("fstride", fs), settings.get("tstride", ts)
    input_fdim = settings.get("input_fdim", 128)
    n_patches = sd["v.pos_embed"].shape[1] - MODEL_SIZES[size].cls_token_num
    f_dim = (input_fdim - fshape) // fs + 1
    # An official file does not record input_tdim: take the shortest input with its grid.
    input_tdim = settings.get("input_tdim", (n_patches // f_dim - 1) * ts + tshape)
    try:
        config = SSASTConfig(size, fshape, tshape, fs, ts, input_fdim, input_tdim)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    if config.grid.num_patches != n_patches:
        raise CheckpointError(
            f"{path}: its pos_embed has {n_patches} patch positions, but fstride={fs}, "
            f"tstride={ts}, input_fdim={input_fdim}, input_tdim={input_tdim} give "
            f"{config.grid.f_dim}x{config.grid.t_dim}={config.grid.num_patches}; pass the "
            "strides and input_tdim it was fine-tuned with"
        )
    file_classes = sd["mlp_head.1.weight"].shape[0]
    n_classes = file_classes if n_classes is None else n_classes
    if n_classes != file_classes and not new_head:
        raise CheckpointError(
            f"{path}: its mlp_head has {file_classes} classes, not n_classes={n_classes}; pass "
            f"n_classes={file_classes}, or new_head=True for a fresh {n_classes}-class head"
        )
    model = SSASTModel(config, n_classes=n_classes, pooling=settings.get("pooling", "avgtok"))
    if new_head:
        fresh = {k: v for k, v in model.state_dict().items() if k.startswith("mlp_head.")}
        sd = {**{k: v for k, v in sd.items() if not k.startswith("mlp_head.")}, **fresh}
    return _strict(model, sd, path)


def _size_of(sd: Mapping[str, Tensor], path: Path) -> str:
    try:
        return infer_size(sd)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None


# ---------------------------------------------------------------------------------------------
# Writing: library format, official format, safetensors (all atomic)


def _cpu_state_dict(model: torch.nn.Module) -> OrderedDict[str, Tensor]:
    return OrderedDict((k, v.detach().cpu().contiguous()) for k, v in model.state_dict().items())


def model_config(model: SSASTModel) -> dict:
    """Everything needed to rebuild ``model``: its :class:`SSASTConfig`, ``n_classes``, pooling."""
    return {
        **dataclasses.asdict(model.config),
        "n_classes": model.n_classes,
        "pooling": model.pooling,
    }


def save_checkpoint(model: SSASTModel, path: str | Path, extra: dict | None = None) -> Path:
    """Save ``{"format": "ssast-teach", "version", "config", "model", "extra"}`` atomically.

    ``extra`` (optimizer state, step, metrics...) must hold only what ``torch.load(weights_only=
    True)`` reads back: tensors, numbers, strings, None, and lists/tuples/dicts of those.
    """
    obj = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": model_config(model),
        "model": _cpu_state_dict(model),
        "extra": extra or {},
    }
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_official(model: SSASTModel, path: str | Path) -> Path:
    """A file the official code loads: DataParallel keys (``module.`` before each), tensors only."""
    sd = OrderedDict(("module." + k, v) for k, v in _cpu_state_dict(model).items())
    return atomic_write(path, lambda tmp: torch.save(sd, tmp))


def export_safetensors(model_or_path: SSASTModel | str | Path, path: str | Path) -> Path:
    """Write the tensors (keys without ``module.``) as safetensors; the config goes in metadata."""
    if isinstance(model_or_path, SSASTModel):
        sd, config = _cpu_state_dict(model_or_path), model_config(model_or_path)
    else:
        loaded = _read(_resolve(model_or_path, fetch=False))
        sd = {k: v.contiguous() for k, v in loaded.state_dict.items()}
        config = loaded.config
    meta = {"format": FORMAT} | ({"config": json.dumps(config)} if config else {})
    return atomic_write(path, lambda tmp: save_file(sd, str(tmp), metadata=meta))


# ---------------------------------------------------------------------------------------------
# Random official-format state dicts (tests, and chapter 08 without the real files)


def official_manifest() -> dict[str, dict[str, dict]]:
    """``resources/official_state_dict_keys.json``: ``"{size}-{geometry}" -> key -> shape/dtype``."""
    text = resources.files("ssast_teach").joinpath("resources/official_state_dict_keys.json")
    return {k: v for k, v in json.loads(text.read_text()).items() if not k.startswith("_")}


def make_official_like(
    size: str, geometry: str = "patch", seed: int = 0
) -> OrderedDict[str, Tensor]:
    """An official pretraining checkpoint's state dict (``module.`` keys, 128x1024 input) with
    random values: the right names, shapes, dtypes and order, none of the learning."""
    manifest = official_manifest()
    key = f"{size}-{geometry}"
    if key not in manifest:
        raise ValueError(f"no manifest entry {key!r}; known: {', '.join(manifest)}")
    gen = torch.Generator().manual_seed(seed)
    sd = OrderedDict()
    for name, entry in manifest[key].items():
        if entry["dtype"] == "int64":  # p_input_fdim / p_input_tdim: the pretraining input size
            sd[name] = torch.tensor(128 if name.endswith("fdim") else 1024)
        else:
            sd[name] = torch.randn(entry["shape"], generator=gen) * 0.02
    return sd


# ---------------------------------------------------------------------------------------------
# Inspecting


@dataclass
class CheckpointSummary:
    """What a checkpoint file holds; ``str()`` gives a readable report."""

    path: Path
    file_bytes: int
    fmt: str
    kind: str
    module_prefix: bool
    model_size: str
    fshape: int
    tshape: int
    num_patches: int
    grid: tuple[int, int] | None  # (f_dim, t_dim), when the file tells
    pretrain_input: tuple[int, int] | None  # (p_input_fdim, p_input_tdim)
    heads: tuple[str, ...]
    n_classes: int | None
    num_params: int
    num_tensors: int
    config: dict | None = None

    def __str__(self) -> str:
        grid = f"{self.grid[0]} x {self.grid[1]} = " if self.grid else ""
        lines = [
            f"file            {self.path} ({self.file_bytes / 2**20:.1f} MiB)",
            f"format          {self.fmt}, module. prefix: {'yes' if self.module_prefix else 'no'}",
            f"kind            {self.kind}",
            f"model size      {self.model_size}",
            f"patch shape     fshape x tshape = {self.fshape} x {self.tshape}",
            f"patch grid      {grid}{self.num_patches} patches",
            "pretrain input  "
            + (
                f"{self.pretrain_input[0]} x {self.pretrain_input[1]} (p_input_fdim x p_input_tdim)"
                if self.pretrain_input
                else "not recorded"
            ),
            f"heads           {', '.join(self.heads) or 'none'}",
            f"parameters      {self.num_params:,} in {self.num_tensors} tensors",
        ]
        return "\n".join(lines)


def inspect(path_or_name: str | Path) -> CheckpointSummary:
    """Summarise a checkpoint file (or a cached registry entry) without building a model."""
    path = _resolve(path_or_name, fetch=False)
    loaded = _read(path)
    sd = loaded.state_dict
    _, _, fshape, tshape = sd["v.patch_embed.proj.weight"].shape
    try:
        size = infer_size(sd)
    except ValueError:
        size = f"unknown (embed_dim {sd['v.patch_embed.proj.weight'].shape[0]})"
    cls_tokens = 2 if "v.dist_token" in sd else 1
    num_patches = sd["v.pos_embed"].shape[1] - cls_tokens
    pretrain_input = grid = None
    if "p_input_fdim" in sd:
        pretrain_input = (int(sd["p_input_fdim"]), int(sd["p_input_tdim"]))
        grid = (pretrain_input[0] // fshape, pretrain_input[1] // tshape)
    elif loaded.config:
        c = loaded.config
        g = SSASTConfig(**{k: v for k, v in c.items() if k not in ("n_classes", "pooling")}).grid
        grid = (g.f_dim, g.t_dim)
    heads = []
    if "cpredlayer.0.weight" in sd:
        heads.append("cpredlayer (discriminative, masked patch classification)")
    if "gpredlayer.0.weight" in sd:
        heads.append("gpredlayer (generative, masked patch reconstruction)")
    n_classes = sd["mlp_head.1.weight"].shape[0] if "mlp_head.1.weight" in sd else None
    if n_classes is not None:
        heads.append(f"mlp_head ({n_classes} classes)")
    return CheckpointSummary(
        path=path,
        file_bytes=path.stat().st_size,
        fmt=loaded.fmt,
        kind=loaded.kind,
        module_prefix=loaded.prefixed,
        model_size=size,
        fshape=fshape,
        tshape=tshape,
        num_patches=num_patches,
        grid=grid,
        pretrain_input=pretrain_input,
        heads=tuple(heads),
        n_classes=n_classes,
        num_params=sum(v.numel() for v in sd.values()),
        num_tensors=len(sd),
        config=loaded.config,
    )


# ---------------------------------------------------------------------------------------------
# Command line


def _list() -> str:
    header = f"{'name':<24} {'size':<6} {'fxt':<6} {'mask':>4}  {'objective':<14} {'audio':>5} {'speech':>6}  pretraining data"
    rows = [header]
    for info in REGISTRY.values():
        audio = "-" if info.avg_audio is None else f"{info.avg_audio:.1f}"
        speech = "-" if info.avg_speech is None else f"{info.avg_speech:.1f}"
        rows.append(
            f"{info.name:<24} {info.model_size:<6} {f'{info.fshape}x{info.tshape}':<6} "
            f"{info.masked_patches:>4}  {info.objective:<14} {audio:>5} {speech:>6}  {info.pretrain_data}"
        )
        if info.changes:
            rows.append(f"{'':<24} ablation {info.ablation_id}: {info.changes}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ssast_teach.checkpoints list | download NAME | inspect PATH_OR_NAME``."""
    parser = argparse.ArgumentParser(
        prog="python -m ssast_teach.checkpoints",
        description="The released SSAST checkpoints: list them, download one, inspect a file.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the released and ablation checkpoints, with their numbers")
    get = commands.add_parser(
        "download", help="download a released checkpoint into the cache and print its path"
    )
    get.add_argument("name", choices=list(REGISTRY), metavar="NAME", help="a name from `list`")
    get.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where to put it (default: $SSAST_TEACH_CACHE or ~/.cache/ssast-teach/checkpoints)",
    )
    look = commands.add_parser("inspect", help="what a checkpoint file holds")
    look.add_argument("target", metavar="PATH_OR_NAME", help="a file, or a downloaded name")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            print(_list())
        elif args.command == "download":
            print(download(args.name, args.cache_dir))
        else:
            print(inspect(args.target))
    except (CheckpointError, DownloadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
