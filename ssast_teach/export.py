"""Chapter 08, export: a course model as a Hugging Face transformers AST.

transformers' Audio Spectrogram Transformer (``ASTModel``, ``ASTForAudioClassification``) is
the same network as an SSAST encoder with two class tokens: patch convolution, ``[CLS, DIST,
patch_1..patch_N] + position embeddings``, pre-norm blocks, a final LayerNorm. So a course
model can leave the course as a directory that ``from_pretrained`` and
``pipeline("audio-classification", model=dir)`` read, with no code of this library:

* :func:`to_hf_classifier`: a fine-tuned :class:`~ssast_teach.model.SSASTModel` with
  ``pooling="cls"`` (official ``ft_cls``) -> ``ASTForAudioClassification``. HF's classifier
  pools ``(h[:, 0] + h[:, 1]) / 2``, the mean of the two class tokens, which is ``cls``; the
  default ``avgtok`` (mean of the patch tokens) has no HF counterpart and is refused;
* :func:`to_hf_encoder`: the encoder of any exportable model (a pretraining checkpoint or a
  fine-tuned one) -> ``ASTModel``;
* both write ``save_pretrained`` (``model.safetensors`` + ``config.json``), a
  ``preprocessor_config.json`` for ``ASTFeatureExtractor`` (the model's front end) and
  ``ssast_teach_export.json`` (where it came from, what was measured), into a temporary
  sibling directory renamed into place at the end.

What HF's config cannot express is an :class:`HFExportError` whose message says what to do
instead: one class token (``base_nokd``), a non-square patch (the 128x2 frame models), a patch
grid HF would compute differently, an input length other than the model's own, ``avgtok``
pooling for the classifier.

**Layer norm epsilon.** HF's config has one ``layer_norm_eps`` for every LayerNorm; the course
model has two: 1e-6 in every block norm and the final norm (timm's DeiT, ``partial(nn.LayerNorm, eps=1e-6)``), 1e-5 in
the classifier's ``mlp_head`` LayerNorm (torch's default, as the official code). The export
uses 1e-6: the encoder is then exact, and only the head norm computes with a smaller epsilon.
Its pooled input has a variance near the final norm's ``weight**2`` (about 1), where the two
epsilons change the normalised values by about ``0.5 * 9e-6 / var``: measured 5e-6 on the
logits of a random ``tiny`` model, 1e-6 on chapter 08's fine-tuned ``mini`` (the tests allow
5e-5). The export measures the difference itself on a probe batch and refuses a model where it
exceeds ``atol`` (a head norm fed a near-constant vector).

**Normalisation.** The library's :func:`~ssast_teach.audio.normalize` is ``(x - mean) / (2 *
std)``, as is ``ASTFeatureExtractor.normalize``: the dataset's mean and std go into the
preprocessor config unchanged.

Command line: ``python -m ssast_teach.export --help``. transformers is an optional extra
(``pip install -e '.[hf]'``); importing this module does not need it.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from ssast_teach import code_version
from ssast_teach.audio import FrontEndConfig
from ssast_teach.audio import norm_stats as stats_pair
from ssast_teach.checkpoints import (
    FORMAT,
    inspect,
    load_checkpoint,
    load_for_finetuning,
    load_pretrained,
)
from ssast_teach.datasets import read_label_csv
from ssast_teach.model import SSASTModel
from ssast_teach.training import cli_errors, write_json

__all__ = [
    "HFExportError",
    "LAYER_NORM_EPS",
    "as_hf_classifier",
    "as_hf_encoder",
    "check_exportable",
    "feature_extractor",
    "hf_config",
    "main",
    "max_difference",
    "to_hf_classifier",
    "to_hf_encoder",
]

# Named, not __name__: under python -m ssast_teach.export the module is __main__, whose log
# lines would miss the ssast_teach logger that log_to_stdout shows.
log = logging.getLogger("ssast_teach.export")

INSTALL_HINT = "install it with: pip install -e '.[hf]' (transformers>=4.40)"
LAYER_NORM_EPS = 1e-6  # the encoder's LayerNorms (timm's DeiT); the head's 1e-5 is not kept
HEAD_LAYER_NORM_EPS = 1e-5  # mlp_head[0]: torch's default, as in the official code
CHECK_ATOL = 1e-3  # the export's own guard on the probe batch, well above float32 noise
RECORD = "ssast_teach_export.json"


class HFExportError(ValueError):
    """A model that transformers' AST cannot express; the message says what to do instead."""


def _transformers():
    """transformers, or an ImportError that says how to install it."""
    try:
        import transformers
    except ImportError as err:
        raise ImportError(f"ssast_teach.export needs Hugging Face transformers; {INSTALL_HINT}") from err
    return transformers


# ---------------------------------------------------------------------------------------------
# What HF can express


def _structure_problems(model: SSASTModel) -> list[str]:
    """Parts of the timm backbone that HF's ASTLayer has no place for (all absent in DeiT:
    this guards against a backbone handed in by hand)."""
    problems = []
    norms = [("v.norm", model.v.norm)]
    for i, blk in enumerate(model.v.blocks):
        norms += [(f"v.blocks.{i}.norm1", blk.norm1), (f"v.blocks.{i}.norm2", blk.norm2)]
        extras = {"ls1": blk.ls1, "ls2": blk.ls2, "attn.q_norm": blk.attn.q_norm,
                  "attn.k_norm": blk.attn.k_norm, "attn.norm": getattr(blk.attn, "norm", None),
                  "mlp.norm": getattr(blk.mlp, "norm", None)}
        problems += [f"v.blocks.{i}.{name} is {type(m).__name__}, not Identity"
                     for name, m in extras.items() if m is not None and not isinstance(m, nn.Identity)]
        if not (isinstance(blk.mlp.act, nn.GELU) and blk.mlp.act.approximate == "none"):
            problems.append(f"v.blocks.{i}.mlp.act is {blk.mlp.act}, not the exact (erf) GELU")
        if blk.attn.qkv.bias is None:
            problems.append(f"v.blocks.{i}.attn.qkv has no bias")
    problems += [f"{name} has eps {m.eps}, not {LAYER_NORM_EPS}" for name, m in norms
                 if m.eps != LAYER_NORM_EPS]
    return problems


def check_exportable(
    model: SSASTModel, *, classifier: bool = False, max_length: int | None = None
) -> None:
    """Raise :class:`HFExportError` when HF's AST (as a classifier, or an encoder) cannot hold
    ``model``; ``max_length``, when given, must be the model's own input length."""
    if not isinstance(model, SSASTModel):
        raise HFExportError(f"expected an SSASTModel, got {type(model).__name__}")
    c, grid = model.config, model.grid
    if model.cls_token_num != 2:
        raise HFExportError(
            f"size={c.size!r} has {model.cls_token_num} class token; HF's AST always prepends "
            "[CLS, DIST] and pools their mean, so it cannot hold this model. Instead: export a "
            "model of a distilled size (tiny, small, base, mini), or keep this one in the library "
            "format (ssast_teach.checkpoints.export_safetensors)"
        )
    if c.fshape != c.tshape:
        raise HFExportError(
            f"the patch is {c.fshape}x{c.tshape}; HF's ASTConfig has one square patch_size, so "
            "frame models (128x2) and other non-square patches cannot be expressed. Instead: "
            "export a square-patch model (the 16x16 patch models), or keep this one in the "
            "library format (ssast_teach.checkpoints.export_safetensors)"
        )
    # HF computes its grid as (num_mel_bins - patch_size) // stride + 1 per axis; the same
    # formula as PatchGrid, so this only fails for a geometry HF would read differently.
    hf_grid = ((c.input_fdim - c.fshape) // c.fstride + 1, (c.input_tdim - c.tshape) // c.tstride + 1)
    if hf_grid != (grid.f_dim, grid.t_dim):
        raise HFExportError(
            f"HF's config would make a {hf_grid[0]}x{hf_grid[1]} patch grid of this geometry, not "
            f"the model's {grid.f_dim}x{grid.t_dim} ({grid}). Instead: keep it in the library "
            "format (ssast_teach.checkpoints.export_safetensors)"
        )
    if max_length is not None and max_length != c.input_tdim:
        raise HFExportError(
            f"max_length={max_length}, but the model reads input_tdim={c.input_tdim} frames: its "
            f"positional embedding has {grid.t_dim} time columns, and HF's AST reads exactly "
            "max_length frames with no resizing. Instead: build a model at that length first "
            "(fine-tune with input_tdim, or checkpoints.load_for_finetuning(..., input_tdim=N) "
            "from the pretraining checkpoint), then export it"
        )
    problems = _structure_problems(model)
    if problems:
        raise HFExportError(
            "the backbone has parts HF's ASTLayer cannot hold: " + "; ".join(problems)
            + ". Instead: keep it in the library format (ssast_teach.checkpoints.export_safetensors)"
        )
    if not classifier:
        return
    if model.pretraining:
        raise HFExportError(
            "a pretraining model has no classifier head. Instead: export its encoder "
            "(to_hf_encoder, `encoder` on the command line), or fine-tune it first"
        )
    if model.pooling != "cls":
        raise HFExportError(
            f"the model pools {model.pooling!r} (mean of the patch tokens); "
            "ASTForAudioClassification pools the mean of the two class tokens, which is the "
            "library's 'cls' (official ft_cls). Instead: fine-tune with task='ft_cls' (--task "
            "ft_cls), or export the encoder (to_hf_encoder) and pool "
            "last_hidden_state[:, 2:].mean(1) before the head yourself"
        )


def hf_config(model: SSASTModel, labels: Sequence[str] | None = None):
    """The ``ASTConfig`` of ``model``'s geometry and widths; ``labels`` give id2label/label2id."""
    transformers = _transformers()
    grid, blk = model.grid, model.v.blocks[0]
    kwargs = dict(
        hidden_size=model.config.spec.embed_dim,
        num_hidden_layers=len(model.v.blocks),
        num_attention_heads=blk.attn.num_heads,
        intermediate_size=blk.mlp.fc1.out_features,
        hidden_act="gelu",  # HF's "gelu" is the exact erf GELU, as timm's nn.GELU()
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=LAYER_NORM_EPS,
        patch_size=grid.fshape,
        qkv_bias=True,
        frequency_stride=grid.fstride,
        time_stride=grid.tstride,
        max_length=grid.input_tdim,
        num_mel_bins=grid.input_fdim,
    )
    if labels is not None:
        # transformers 5 no longer derives label2id from id2label: both are given.
        kwargs["id2label"] = dict(enumerate(labels))
        kwargs["label2id"] = {name: i for i, name in enumerate(labels)}
    return transformers.ASTConfig(**kwargs)


# ---------------------------------------------------------------------------------------------
# Weights


def _hf_layers(ast) -> nn.ModuleList:
    """The encoder layers: ``ast.layers`` in transformers 5, ``ast.encoder.layer`` in 4.x."""
    return ast.layers if hasattr(ast, "layers") else ast.encoder.layer


def _hf_linears(layer) -> tuple[nn.Linear, ...]:
    """``(query, key, value, attention output, mlp in, mlp out)`` of one HF ASTLayer, in
    either layout (transformers 5 ``q_proj ... mlp.fc2``; 4.x ``attention.attention.query ...``)."""
    attn = layer.attention
    if hasattr(attn, "q_proj"):
        return attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, layer.mlp.fc1, layer.mlp.fc2
    inner = attn.attention
    return (inner.query, inner.key, inner.value, attn.output.dense, layer.intermediate.dense,
            layer.output.dense)


def _encoder_pairs(model: SSASTModel, ast) -> list[tuple[Tensor, Tensor]]:
    """``(HF parameter, library tensor)`` for every parameter of an HF ``ASTModel``."""
    v, emb = model.v, ast.embeddings
    pairs = [
        (emb.cls_token, v.cls_token),
        (emb.distillation_token, v.dist_token),
        (emb.position_embeddings, v.pos_embed),  # (1, 2 + N, D), class tokens first in both
        (emb.patch_embeddings.projection.weight, v.patch_embed.proj.weight),  # (D, 1, f, t)
        (emb.patch_embeddings.projection.bias, v.patch_embed.proj.bias),
        (ast.layernorm.weight, v.norm.weight),
        (ast.layernorm.bias, v.norm.bias),
    ]
    for blk, layer in zip(v.blocks, _hf_layers(ast), strict=True):
        q, k, val, out, fc1, fc2 = _hf_linears(layer)
        # timm's fused qkv: output rows [q (all heads) | k | v], each head a contiguous
        # head_dim slice, as HF's per-projection .view(..., heads, head_dim) expects.
        for hf, w, b in zip((q, k, val), blk.attn.qkv.weight.chunk(3), blk.attn.qkv.bias.chunk(3),
                            strict=True):
            pairs += [(hf.weight, w), (hf.bias, b)]  # (D, D), (D,)
        for hf, lib in ((layer.layernorm_before, blk.norm1), (out, blk.attn.proj),
                        (layer.layernorm_after, blk.norm2), (fc1, blk.mlp.fc1), (fc2, blk.mlp.fc2)):
            pairs += [(hf.weight, lib.weight), (hf.bias, lib.bias)]
    return pairs


def _load_pairs(hf_model: nn.Module, pairs: list[tuple[Tensor, Tensor]]) -> None:
    """Load by parameter identity, so the names are the installed transformers' own; strict:
    every HF parameter must get a tensor of its exact shape."""
    names = {id(p): name for name, p in hf_model.named_parameters()}
    state = {names[id(hf)]: lib.detach().to("cpu", torch.float32).clone() for hf, lib in pairs}
    hf_model.load_state_dict(state, strict=True)


def as_hf_encoder(model: SSASTModel):
    """``model``'s encoder as an in-memory HF ``ASTModel`` (eval mode, float32, CPU).

    Not carried over: the never-trained ImageNet heads ``v.head``/``v.head_dist``, and for a
    pretraining model ``mask_embed``, ``cpredlayer``, ``gpredlayer``, ``p_input_*``.
    """
    check_exportable(model)
    ast = _transformers().ASTModel(hf_config(model))
    _load_pairs(ast, _encoder_pairs(model, ast))
    return ast.eval()


def as_hf_classifier(model: SSASTModel, labels: Sequence[str]):
    """``model`` (fine-tuned, ``pooling="cls"``) as an in-memory ``ASTForAudioClassification``."""
    check_exportable(model, classifier=True)
    labels = _checked_labels(labels, model.n_classes)
    hf = _transformers().ASTForAudioClassification(hf_config(model, labels))
    ast = hf.audio_spectrogram_transformer
    norm, dense = model.mlp_head[0], model.mlp_head[1]
    # mlp_head[0] has eps 1e-5; HF's classifier.layernorm gets the config's 1e-6: the one
    # difference of the export, measured by max_difference (module docstring).
    head = [(hf.classifier.layernorm.weight, norm.weight), (hf.classifier.layernorm.bias, norm.bias),
            (hf.classifier.dense.weight, dense.weight), (hf.classifier.dense.bias, dense.bias)]
    _load_pairs(hf, _encoder_pairs(model, ast) + head)
    return hf.eval()


def _checked_labels(labels: Sequence[str], n_classes: int) -> list[str]:
    labels = [str(name) for name in labels]
    if len(labels) != n_classes:
        raise ValueError(f"got {len(labels)} label names for a model with {n_classes} classes")
    repeated = sorted({name for name in labels if labels.count(name) > 1})
    if repeated:
        raise ValueError(f"label names must be distinct (label2id maps names to ids): {repeated}")
    return labels


# ---------------------------------------------------------------------------------------------
# Checking, front end, writing


@torch.no_grad()
def max_difference(model: SSASTModel, hf_model, *, batch: int = 2, seed: int = 0) -> float:
    """Largest absolute difference between ``model`` and its export on a probe batch: logits
    for an ``ASTForAudioClassification``, every output token for an ``ASTModel``.

    The probe is normal noise of std 0.5, the spread of a normalised fbank; both run in float32
    on the CPU in eval mode (``model`` itself is left as it was).
    """
    lib = copy.deepcopy(model).to("cpu", torch.float32).eval()
    g = lib.grid
    x = torch.randn(batch, g.input_tdim, g.input_fdim, generator=torch.Generator().manual_seed(seed))
    x = x * 0.5  # (B, T, F)
    hf_model = hf_model.eval()
    if hasattr(hf_model, "classifier"):
        ours, theirs = lib(x), hf_model(input_values=x).logits  # (B, n_classes) each
    else:
        ours, theirs = lib.tokens(x), hf_model(input_values=x).last_hidden_state  # (B, 2 + N, D)
    return float((ours - theirs).abs().max())


def feature_extractor(model: SSASTModel, stats: str | tuple[float, float]):
    """``ASTFeatureExtractor`` for ``model``: 16 kHz, ``input_fdim`` mel bins, ``input_tdim``
    frames, the dataset's ``(mean, std)`` (or a name of :data:`~ssast_teach.audio.NORM_STATS`).

    Both front ends run torchaudio's kaldi fbank (25 ms Hanning window, 10 ms hop, no dither),
    zero-pad or cut the frames at the end and normalise with ``(x - mean) / (2 * std)``. The
    library also removes the waveform's mean first; kaldi removes each frame's mean anyway, so
    that changes only rounding.
    """
    mean, std = stats_pair(stats)
    return _transformers().ASTFeatureExtractor(
        feature_size=1,
        sampling_rate=FrontEndConfig().sample_rate,
        num_mel_bins=model.grid.input_fdim,
        max_length=model.grid.input_tdim,
        padding_value=0.0,
        do_normalize=True,
        mean=mean,
        std=std,
        return_attention_mask=False,
    )


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """Without transformers' progress bar for a one-file write (noise in a notebook cell),
    restoring the user's setting after."""
    hf_logging = _transformers().utils.logging
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise FileExistsError(f"{path}: exists and is not a directory; choose another --out")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{path}: exists and is not empty; pass overwrite=True (--overwrite) to replace it, "
            "or choose another directory"
        )


def _write_dir(path: Path, write: Callable[[Path], object], overwrite: bool) -> Path:
    """Call ``write(tmp)`` on a new directory next to ``path``, then rename it onto ``path``.

    ``download.atomic_write`` does this for single files; a directory needs its own: a failed
    ``write`` must remove a tree, and a non-empty old directory (``overwrite``) cannot be
    renamed over, so it is renamed aside first and deleted after. A reader sees the old
    directory, briefly none, or the new one; never a half-written one.
    """
    _refuse_existing(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp, old = path.with_name(f".{path.name}.{tag}.tmp"), path.with_name(f".{path.name}.{tag}.old")
    try:
        tmp.mkdir()
        write(tmp)
        _refuse_existing(path, overwrite)  # again: something may have appeared meanwhile
        if path.is_dir() and any(path.iterdir()):
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except OSError:
                os.rename(old, path)  # put the old one back
                raise
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)  # rename(2) may replace an empty directory
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _save(
    hf_model, model: SSASTModel, out_dir: str | Path, *, kind: str, stats, overwrite: bool,
    atol: float, source: str | None,
) -> Path:
    out_dir = Path(out_dir).expanduser()
    diff = max_difference(model, hf_model)
    what = "logits" if kind == "classifier" else "hidden states"
    if not diff <= atol:
        raise HFExportError(
            f"the exported model's {what} differ from the library's by {diff:.3g} on a probe "
            f"batch (allowed: {atol:g}); HF computes this model differently (with the head "
            f"norm: its eps {LAYER_NORM_EPS:g} instead of {HEAD_LAYER_NORM_EPS:g} on a "
            "near-constant input?). Instead: keep it in the library format "
            "(ssast_teach.checkpoints.export_safetensors)"
        )
    extractor = feature_extractor(model, stats)
    transformers = _transformers()
    record = {
        "kind": kind, "hf_class": type(hf_model).__name__, "source": source,
        "ssast_teach": code_version(), "transformers": transformers.__version__,
        "size": model.config.size, "grid": str(model.grid),
        "pooling": None if model.pretraining else model.pooling,
        "layer_norm_eps": LAYER_NORM_EPS,
        "library_head_layer_norm_eps": HEAD_LAYER_NORM_EPS if kind == "classifier" else None,
        "norm_stats": list(stats_pair(stats)),
        f"probe_max_abs_diff_{what.replace(' ', '_')}": diff,
    }

    def write(tmp: Path) -> None:
        with _no_progress_bars():
            hf_model.save_pretrained(tmp, safe_serialization=True)  # model.safetensors, config.json
        extractor.save_pretrained(tmp)  # preprocessor_config.json
        write_json(tmp / RECORD, record)

    _write_dir(out_dir, write, overwrite)
    log.info(f"exported {kind} to {out_dir} ({type(hf_model).__name__}); {what} within "
             f"{diff:.2g} of the library's on a probe batch")
    return out_dir


def to_hf_classifier(
    model: SSASTModel,
    out_dir: str | Path,
    *,
    labels: Sequence[str],
    norm_stats: str | tuple[float, float],
    max_length: int | None = None,
    overwrite: bool = False,
    atol: float = CHECK_ATOL,
    source: str | None = None,
) -> Path:
    """Write a fine-tuned ``pooling="cls"`` model as an ``ASTForAudioClassification`` directory.

    ``labels``: the class names in head order (``config.id2label``); ``norm_stats``: the
    dataset's ``(mean, std)`` the model was trained with, or a name of
    :data:`~ssast_teach.audio.NORM_STATS`. ``max_length`` only checks the model's input length.
    A non-empty ``out_dir`` is replaced only with ``overwrite=True``. Raises
    :class:`HFExportError` for what HF cannot express, or when the exported logits differ by
    more than ``atol`` on a probe batch. ``source`` (a checkpoint path) goes in the record.
    """
    check_exportable(model, classifier=True, max_length=max_length)
    _refuse_existing(Path(out_dir).expanduser(), overwrite)
    return _save(as_hf_classifier(model, labels), model, out_dir, kind="classifier",
                 stats=norm_stats, overwrite=overwrite, atol=atol, source=source)


def to_hf_encoder(
    model: SSASTModel,
    out_dir: str | Path,
    *,
    norm_stats: str | tuple[float, float],
    max_length: int | None = None,
    overwrite: bool = False,
    atol: float = CHECK_ATOL,
    source: str | None = None,
) -> Path:
    """Write ``model``'s encoder (pretraining or fine-tuned) as an ``ASTModel`` directory;
    arguments as :func:`to_hf_classifier`. ``last_hidden_state`` is ``model.tokens(x)``."""
    check_exportable(model, max_length=max_length)
    _refuse_existing(Path(out_dir).expanduser(), overwrite)
    return _save(as_hf_encoder(model), model, out_dir, kind="encoder", stats=norm_stats,
                 overwrite=overwrite, atol=atol, source=source)


# ---------------------------------------------------------------------------------------------
# Command line

_GEOMETRY = ("input_tdim", "fstride", "tstride", "pooling")  # only for official fine-tuned files


def _labels(args: argparse.Namespace, checkpoint: Path, n_classes: int) -> list[str]:
    """--labels (a label CSV or comma-separated names), else the class names the fine-tuning
    run wrote next to the checkpoint (results.json)."""
    if args.labels:
        path = Path(args.labels).expanduser()
        if path.is_file():
            rows = sorted(read_label_csv(path))
            names = [name for _, _, name in rows]
        else:
            names = [name.strip() for name in args.labels.split(",")]
        where = f"--labels {args.labels}"
    else:
        results = checkpoint.parent / "results.json"
        names = json.loads(results.read_text()).get("class_names") if results.is_file() else None
        if not names:
            raise ValueError(
                f"{checkpoint}: no class names given and no results.json with class_names next to "
                "it; pass --labels LABEL_CSV (index,mid,display_name) or --labels name1,name2,..."
            )
        where = str(results)
    try:
        return _checked_labels(names, n_classes)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def _stats(args: argparse.Namespace, recorded, checkpoint: Path) -> str | tuple[float, float]:
    """--norm-stats or --mean/--std, else the stats the checkpoint's run recorded."""
    if (args.mean is None) != (args.std is None):
        raise ValueError("--mean and --std go together")
    if args.mean is not None:
        if args.norm_stats:
            raise ValueError("give --norm-stats or --mean/--std, not both")
        return stats_pair((args.mean, args.std))
    if args.norm_stats:
        return args.norm_stats
    if recorded is not None:
        return recorded if isinstance(recorded, str) else tuple(recorded)
    raise ValueError(
        f"{checkpoint}: does not record the dataset mean and std it was trained with; pass "
        "--norm-stats NAME (audioset for the official pretraining, esc50, speechcommands) or "
        "--mean M --std S"
    )


def _load(args: argparse.Namespace, checkpoint: Path) -> tuple[SSASTModel, object]:
    """The model of ``checkpoint`` through the checkpoints loaders (weights_only, strict), and
    the norm stats its run recorded (library format only)."""
    summary = inspect(checkpoint)
    given = [f"--{k.replace('_', '-')}" for k in _GEOMETRY if getattr(args, k, None) is not None]
    if summary.fmt == FORMAT:
        if given:
            raise ValueError(f"{checkpoint}: records its geometry and pooling; drop {given}")
        model, extra = load_checkpoint(checkpoint)
        return model, (extra.get("config") or {}).get("norm_stats")
    if summary.kind == "pretraining":
        if given:
            raise ValueError(f"{checkpoint}: a pretraining checkpoint; {given} do not apply")
        return load_pretrained(checkpoint), None
    return load_for_finetuning(checkpoint, **{k: getattr(args, k, None) for k in _GEOMETRY}), None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ssast_teach.export",
        description="Write a course checkpoint as a Hugging Face transformers AST directory "
        "(save_pretrained + ASTFeatureExtractor config). Needs pip install -e '.[hf]'.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  python -m ssast_teach.export classifier runs/fsdd/finetuned.pth --out hf/fsdd\n"
        "  python -m ssast_teach.export encoder data/results/reference/pretrained.pth "
        "--out hf/encoder --norm-stats audioset\n",
    )
    commands = p.add_subparsers(dest="command", required=True)
    for name, text in (("classifier", "a fine-tuned ft_cls model -> ASTForAudioClassification"),
                       ("encoder", "the encoder of any 16x16 patch model -> ASTModel")):
        c = commands.add_parser(name, help=text, description=text)
        a = c.add_argument
        a("checkpoint", type=Path, help="a library checkpoint (finetuned.pth, pretrained.pth), an "
          "official one, or a safetensors export")
        a("--out", type=Path, required=True, help="the directory to write")
        a("--overwrite", action="store_true", help="replace --out if it is not empty")
        a("--norm-stats", metavar="NAME", help="dataset mean/std by name (audioset, esc50, speechcommands) "
          "[default: recorded in the checkpoint]")
        a("--mean", type=float, help="dataset fbank mean (with --std)")
        a("--std", type=float, help="dataset fbank std (with --mean)")
        if name == "classifier":
            a("--labels", help="class names in head order: a label CSV (index,mid,display_name) "
              "or name1,name2,... [default: class_names of results.json next to the checkpoint]")
            a("--pooling", choices=["avgtok", "cls"], help="official fine-tuned files only "
              "(they do not record it): the pooling it was fine-tuned with [default: avgtok]")
        a("--input-tdim", type=int, help="official fine-tuned files only: input frames")
        a("--fstride", type=int, help="official fine-tuned files only [default: 10]")
        a("--tstride", type=int, help="official fine-tuned files only [default: 10]")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with cli_errors():
            _transformers()  # fail before reading a large checkpoint
            checkpoint = args.checkpoint.expanduser()
            model, recorded = _load(args, checkpoint)
            classifier = args.command == "classifier"
            try:
                check_exportable(model, classifier=classifier)
            except HFExportError as err:
                raise HFExportError(f"{checkpoint}: {err}") from None
            stats = _stats(args, recorded, checkpoint)
            if classifier:
                labels = _labels(args, checkpoint, model.n_classes)
                out = to_hf_classifier(model, args.out, labels=labels, norm_stats=stats,
                                       overwrite=args.overwrite, source=str(checkpoint))
            else:
                out = to_hf_encoder(model, args.out, norm_stats=stats, overwrite=args.overwrite,
                                    source=str(checkpoint))
    except (FileExistsError, ImportError) as error:
        raise SystemExit(f"error: {error}") from None
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
