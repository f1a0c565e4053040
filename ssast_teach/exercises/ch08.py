"""Checkers for chapter 08 (the official checkpoints): a checkpoint's geometry and its
parameter counts, read from a bare state dict.

The cases are official layouts (:func:`ssast_teach.checkpoints.make_official_like`, with the
``module.`` prefix) and the course's own models (without it, or with it added). The reference
geometry is the one :meth:`SSASTModel.from_pretrained_state_dict` builds from the same dict.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from ssast_teach.checkpoints import make_official_like
from ssast_teach.exercises import ExerciseError, call_student, checker, passed
from ssast_teach.model import SSASTConfig, SSASTModel, strip_module_prefix

GEOMETRY_KEYS = ("embed_dim", "depth", "cls_tokens", "fshape", "tshape", "num_patches",
                 "input_fdim", "input_tdim")
COUNT_KEYS = ("total", "encoder", "heads", "unused", "other")


def _prefixed(sd: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
    return OrderedDict(("module." + k, v) for k, v in sd.items())


def _mini(fshape: int, tshape: int, input_tdim: int, seed: int, n_classes: int | None = None):
    torch.manual_seed(seed)
    model = SSASTModel.for_pretraining("mini", fshape, tshape, 128, input_tdim)
    if n_classes is not None:
        model = SSASTModel.for_finetuning(model.state_dict(), n_classes=n_classes, fstride=fshape,
                                          tstride=tshape, input_tdim=input_tdim)
    return model.state_dict()


def _geometry_cases(hidden: bool) -> list[tuple[str, Mapping[str, Tensor]]]:
    cases = [
        ("the official tiny patch layout (module. keys)", make_official_like("tiny", "patch")),
        ("a mini 16x16 model pretrained on 128x256 (no prefix)", _mini(16, 16, 256, 800)),
    ]
    if hidden:
        cases += [
            ("the official tiny frame layout (module. keys)", make_official_like("tiny", "frame")),
            ("a mini 128x2 frame model on 128x64 (module. keys)", _prefixed(_mini(128, 2, 64, 801))),
            ("a mini 16x16 model on 128x96 (no prefix)", _mini(16, 16, 96, 802)),
        ]
    return cases


def _expected_geometry(sd: Mapping[str, Tensor]) -> dict[str, int]:
    config: SSASTConfig = SSASTModel.from_pretrained_state_dict(sd).config
    spec, grid = config.spec, config.grid
    return {"embed_dim": spec.embed_dim, "depth": spec.depth, "cls_tokens": spec.cls_token_num,
            "fshape": config.fshape, "tshape": config.tshape, "num_patches": grid.num_patches,
            "input_fdim": config.input_fdim, "input_tdim": config.input_tdim}


def _check_dict(name: str, got: object, expected: Mapping[str, int], case: str,
                hints: Mapping[str, Callable[[int, int], str | None]]) -> None:
    if not isinstance(got, Mapping):
        raise ExerciseError(f"{name} on {case} should return a dict, got {type(got).__name__}")
    missing = [k for k in expected if k not in got]
    if missing:
        raise ExerciseError(f"{name} on {case}: the dict has no key(s) {missing}; expected keys "
                            f"{list(expected)}")
    for key, want in expected.items():
        value = got[key]
        if isinstance(value, Tensor):
            raise ExerciseError(f"{name} on {case}: {key!r} is a tensor; return a plain int "
                                f"(int(...)), here {want}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ExerciseError(f"{name} on {case}: {key!r} should be an int, got "
                                f"{type(value).__name__} {value!r}")
        if value != want:
            hint = hints[key](value, want) if key in hints else None
            raise ExerciseError(f"{name} on {case}: {key!r} is {value}, expected {want}"
                                + (f" -- {hint}" if hint else ""))


def _run(fn: Callable, sd: Mapping[str, Tensor], case: str) -> object:
    try:
        return call_student(fn, OrderedDict(sd), case=case)
    except ExerciseError as error:
        if "KeyError" in str(error) and any(k.startswith("module.") for k in sd):
            raise ExerciseError(f"{error} -- official keys start with 'module.' (DataParallel): "
                                "strip it first") from None
        raise


@checker()
def check_infer_geometry(infer_geometry: Callable, hidden: bool = False) -> None:
    """``infer_geometry(state_dict)`` -> dict of :data:`GEOMETRY_KEYS` ints."""
    for case, sd in _geometry_cases(hidden):
        expected = _expected_geometry(sd)
        n_blocks_keys = sum(1 for k in strip_module_prefix(sd) if k.startswith("v.blocks."))
        hints = {
            "num_patches": lambda got, want, e=expected: (
                "v.pos_embed also holds the class-token rows: subtract cls_tokens"
                if got == want + e["cls_tokens"] else None),
            "depth": lambda got, want, n=n_blocks_keys: (
                "that is the number of block tensors; count the distinct block indices"
                if got == n else None),
            "embed_dim": lambda got, want: (
                "v.patch_embed.proj.weight is (D, 1, fshape, tshape): D is its first dim"
                if got in (1, 16, 128, 2) else None),
        }
        got = _run(infer_geometry, sd, case)
        _check_dict("infer_geometry(state_dict)", got, expected, case, hints)
    passed(8, 1, "your geometry matches what SSASTModel.from_pretrained_state_dict reads")


def _expected_counts(sd: Mapping[str, Tensor]) -> dict[str, int]:
    counts = dict.fromkeys(COUNT_KEYS, 0)
    for key, tensor in strip_module_prefix(sd).items():
        if key.startswith(("v.head.", "v.head_dist.")):
            part = "unused"
        elif key.startswith(("cpredlayer.", "gpredlayer.", "mlp_head.")):
            part = "heads"
        elif key.startswith("v."):
            part = "encoder"
        else:
            part = "other"
        counts[part] += tensor.numel()
        counts["total"] += tensor.numel()
    return counts


def _count_cases(hidden: bool) -> list[tuple[str, Mapping[str, Tensor]]]:
    cases = [
        ("the official tiny patch layout (module. keys)", make_official_like("tiny", "patch")),
        ("a mini pretraining model (no prefix)", _mini(16, 16, 256, 810)),
        ("a mini fine-tuning model with a 10-class mlp_head (no prefix)",
         _mini(16, 16, 128, 811, n_classes=10)),
    ]
    if hidden:
        cases += [
            ("the official tiny frame layout (module. keys)", make_official_like("tiny", "frame")),
            ("a mini frame fine-tuning model, 35 classes (module. keys)",
             _prefixed(_mini(128, 2, 64, 812, n_classes=35))),
        ]
    return cases


@checker()
def check_count_parameters(count_parameters: Callable, hidden: bool = False) -> None:
    """``count_parameters(state_dict)`` -> dict of :data:`COUNT_KEYS` ints."""
    for case, sd in _count_cases(hidden):
        expected = _expected_counts(sd)
        hints = {
            "encoder": lambda got, want, e=expected: (
                "v.head.* and v.head_dist.* (the ImageNet heads) belong to 'unused', not "
                "'encoder'" if got == want + e["unused"] else None),
            "total": lambda got, want, e=expected: (
                "count every tensor, p_input_fdim/p_input_tdim and mask_embed too"
                if got < want and want - got <= e["other"] else None),
        }
        got = _run(count_parameters, sd, case)
        _check_dict("count_parameters(state_dict)", got, expected, case, hints)
    passed(8, 2, "your parameter counts add up, part by part")
