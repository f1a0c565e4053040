"""Checkers for chapter 08 (the official checkpoints): an official state dict mapped into the
library's model, the patch strides a fine-tuned checkpoint admits, and its parameter counts.

The cases are official layouts (:func:`ssast_teach.checkpoints.make_official_like`, with the
``module.`` prefix) and the course's own models (without it, or with it added). The reference
model is the one :meth:`SSASTModel.from_pretrained_state_dict` builds from the same dict; the
strides are checked by their properties (each reproduces the checkpoint's patch count, the
recipe's stride is among them, none is missing against a brute force), on two-token models and
on a one-token ``base_nokd``, so that "pos_embed rows - 2" is not enough.
"""

from __future__ import annotations

import functools
import random
from collections import OrderedDict
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from ssast_teach.checkpoints import make_official_like
from ssast_teach.exercises import ExerciseError, call_student, checker, hidden_seed, passed
from ssast_teach.model import SSASTConfig, SSASTModel, infer_size, strip_module_prefix

__all__ = ["check_count_parameters", "check_model_from_official", "check_strides_that_fit"]

COUNT_KEYS = ("total", "encoder", "heads", "unused", "other")


def _prefixed(sd: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
    return OrderedDict(("module." + k, v) for k, v in sd.items())


def _mini(fshape: int, tshape: int, input_tdim: int, seed: int) -> OrderedDict[str, Tensor]:
    torch.manual_seed(seed)
    return SSASTModel.for_pretraining("mini", fshape, tshape, 128, input_tdim).state_dict()


def _run(fn: Callable, sd: Mapping[str, Tensor], case: str, *args: object) -> object:
    try:
        return call_student(fn, OrderedDict(sd), *args, case=case)
    except ExerciseError as error:
        if "KeyError" in str(error) and any(k.startswith("module.") for k in sd):
            raise ExerciseError(f"{error} -- official keys start with 'module.' (DataParallel): "
                                "strip it first") from None
        raise


# ---------------------------------------------------------------------------- exercise 1


def _model_from_official(state_dict: Mapping[str, Tensor]) -> SSASTModel:
    return SSASTModel.from_pretrained_state_dict(state_dict)


def _official_cases(hidden: bool) -> list[tuple[str, Mapping[str, Tensor]]]:
    cases = [
        ("the official tiny patch layout (module. keys, 128 x 1024)",
         make_official_like("tiny", "patch")),
        ("a mini 16 x 16 model pretrained on 128 x 256 (no prefix)", _mini(16, 16, 256, 800)),
    ]
    if hidden:
        rng = random.Random(hidden_seed(801))
        tdim = 16 * rng.randint(2, 12)
        cases += [
            ("the official tiny frame layout (module. keys)",
             make_official_like("tiny", "frame", seed=rng.randint(0, 99))),
            (f"a mini 128 x 2 frame model on 128 x {tdim} (module. keys)",
             _prefixed(_mini(128, 2, tdim, rng.randint(0, 10**6)))),
            (f"a mini 16 x 16 model on 128 x {tdim + 16} (no prefix)",
             _mini(16, 16, tdim + 16, rng.randint(0, 10**6))),
        ]
    return cases


_GEOMETRY = ("size", "fshape", "tshape", "fstride", "tstride", "input_fdim", "input_tdim")
_GEOMETRY_HINTS = {
    "size": "read it from the tensors: D = v.patch_embed.proj.weight.shape[0], the depth from "
            "the distinct v.blocks.<i> indices, and a v.dist_token means two class tokens "
            "(ssast_teach.model.MODEL_SIZES)",
    "fshape": "v.patch_embed.proj.weight is (D, 1, fshape, tshape)",
    "tshape": "v.patch_embed.proj.weight is (D, 1, fshape, tshape)",
    "fstride": "pretraining patches do not overlap: the stride equals the patch shape (the "
               "fine-tuning strides come later, with load_for_finetuning)",
    "tstride": "pretraining patches do not overlap: the stride equals the patch shape (the "
               "fine-tuning strides come later, with load_for_finetuning)",
    "input_fdim": "the pretraining input size is stored in p_input_fdim / p_input_tdim",
    "input_tdim": "the pretraining input size is stored in p_input_fdim / p_input_tdim: "
                  "not every checkpoint was pretrained on 1024 frames",
}


def _expected_config(sd: Mapping[str, Tensor]) -> dict[str, object]:
    """What ``SSASTModel.from_pretrained_state_dict`` reads, without building the model."""
    plain = strip_module_prefix(sd)
    _, _, fshape, tshape = plain["v.patch_embed.proj.weight"].shape
    return {"size": infer_size(plain), "fshape": fshape, "tshape": tshape, "fstride": fshape,
            "tstride": tshape, "input_fdim": int(plain["p_input_fdim"]),
            "input_tdim": int(plain["p_input_tdim"])}


@checker(reference=_model_from_official)
def check_model_from_official(model_from_official: Callable, hidden: bool = False) -> None:
    """``model_from_official(state_dict)`` -> the :class:`SSASTModel` the checkpoint describes,
    its weights loaded strictly."""
    for case, sd in _official_cases(hidden):
        expected = _expected_config(sd)
        try:
            got = _run(model_from_official, sd, case)
        except ExerciseError as error:
            if "size mismatch" in str(error) and "pos_embed" in str(error):
                raise ExerciseError(f"{error} -- v.pos_embed has one row per patch of the "
                                    f"pretraining grid: {_GEOMETRY_HINTS['input_tdim']}") from None
            raise
        if not isinstance(got, SSASTModel):
            raise ExerciseError(f"model_from_official on {case} should return an "
                                f"ssast_teach.model.SSASTModel, got {type(got).__name__}")
        for name in _GEOMETRY:
            g, w = getattr(got.config, name), expected[name]
            if g != w:
                raise ExerciseError(f"model_from_official on {case}: the model's {name} is "
                                    f"{g!r}, expected {w!r} -- {_GEOMETRY_HINTS[name]}")
        want, have = strip_module_prefix(sd), got.state_dict()
        if set(have) != set(want):
            raise ExerciseError(f"model_from_official on {case}: the model's keys differ from the "
                                f"checkpoint's (without 'module.'): extra {sorted(set(have) - set(want))[:3]}, "
                                f"missing {sorted(set(want) - set(have))[:3]}")
        stale = [k for k in want if not torch.equal(have[k].cpu(), want[k])]
        if stale:
            raise ExerciseError(f"model_from_official on {case}: the model's {stale[:3]} (and "
                                f"{max(0, len(stale) - 3)} more) are not the checkpoint's tensors "
                                "-- load the state dict into the model (strict=True), after "
                                "stripping 'module.', so no weight keeps its random initial value")
    passed(8, 1, "your model has the checkpoint's geometry and every one of its tensors")


# ---------------------------------------------------------------------------- exercise 2


def _n_patches(fdim: int, tdim: int, fshape: int, tshape: int, fs: int, ts: int) -> int:
    return ((fdim - fshape) // fs + 1) * ((tdim - tshape) // ts + 1)


def _brute_force(fdim: int, tdim: int, fshape: int, tshape: int, n: int) -> set[tuple[int, int]]:
    return {(fs, ts) for fs in range(1, fshape + 1) for ts in range(1, tshape + 1)
            if _n_patches(fdim, tdim, fshape, tshape, fs, ts) == n}


def _finetuned(fshape: int, tshape: int, fs: int, ts: int, tdim: int, seed: int,
               prefix: bool) -> OrderedDict[str, Tensor]:
    pre = _mini(fshape, tshape, 128, seed)
    model = SSASTModel.for_finetuning(pre, n_classes=10, fstride=fs, tstride=ts, input_tdim=tdim)
    sd = model.state_dict()
    return _prefixed(sd) if prefix else sd


@functools.cache
def _nokd_finetuned(fs: int, ts: int, tdim: int) -> OrderedDict[str, Tensor]:
    """A ``base_nokd`` fine-tuning state dict (one class token, no ``v.dist_token``): built on
    the meta device and given uninitialised memory, since only its shapes matter here; a real
    86 M-parameter model would take seconds to initialise."""
    with torch.device("meta"):
        model = SSASTModel(SSASTConfig("base_nokd", 16, 16, fs, ts, 128, tdim), n_classes=10)
    return model.to_empty(device="cpu").state_dict()


def _stride_cases(hidden: bool) -> list[tuple[str, Mapping[str, Tensor], int, tuple[int, int]]]:
    cases = [
        ("a mini 16 x 16 model fine-tuned the ESC-50 way (stride 10 x 10, 128 x 512, module. keys)",
         _finetuned(16, 16, 10, 10, 512, 820, True), 512, (10, 10)),
        ("a mini 128 x 2 frame model fine-tuned the Speech Commands way (stride 128 x 1, 128 x 128)",
         _finetuned(128, 2, 128, 1, 128, 821, False), 128, (128, 1)),
        ("a mini 16 x 16 model fine-tuned with stride 8 x 16 on 128 x 64",
         _finetuned(16, 16, 8, 16, 64, 822, False), 64, (8, 16)),
        # one class token: 144 patches, and (9, 11) or (11, 9) give the 143 of "rows - 2"
        ("a base_nokd model (one class token) fine-tuned with stride 10 x 10 on 128 x 128",
         _nokd_finetuned(10, 10, 128), 128, (10, 10)),
    ]
    if hidden:
        rng = random.Random(hidden_seed(823))
        for k in range(3):
            fs, ts, tdim = rng.randint(4, 16), rng.randint(4, 16), 16 * rng.randint(3, 16)
            cases.append((f"a mini 16 x 16 model fine-tuned with stride {fs} x {ts} on 128 x {tdim}",
                          _finetuned(16, 16, fs, ts, tdim, rng.randint(0, 10**6), k % 2 == 0),
                          tdim, (fs, ts)))
        ts, tdim = rng.randint(1, 2), 2 * rng.randint(16, 64)
        cases.append((f"a mini 128 x 2 frame model fine-tuned with stride 128 x {ts} on 128 x {tdim}",
                      _finetuned(128, 2, 128, ts, tdim, rng.randint(0, 10**6), True), tdim, (128, ts)))
    return cases


def _pairs(got: object, case: str) -> list[tuple[int, int]]:
    if isinstance(got, Tensor) or not isinstance(got, list | tuple | set | frozenset):
        raise ExerciseError(f"strides_that_fit on {case} should return a list of (fstride, "
                            f"tstride) pairs, got {type(got).__name__}")
    pairs = []
    for pair in got:
        if not isinstance(pair, list | tuple) or len(pair) != 2 or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in pair):
            raise ExerciseError(f"strides_that_fit on {case}: each entry should be a pair of "
                                f"plain ints (fstride, tstride), got {pair!r}")
        pairs.append((pair[0], pair[1]))
    if len(set(pairs)) != len(pairs):
        raise ExerciseError(f"strides_that_fit on {case}: some pairs are listed twice")
    return pairs


@checker()
def check_strides_that_fit(strides_that_fit: Callable, hidden: bool = False) -> None:
    """``strides_that_fit(state_dict, input_tdim, input_fdim=128)`` -> every (fstride, tstride)
    pair, each from 1 to the patch side, that gives the checkpoint's number of patches."""
    for case, sd, tdim, recipe in _stride_cases(hidden):
        plain = strip_module_prefix(sd)
        _, _, fshape, tshape = plain["v.patch_embed.proj.weight"].shape
        cls_tokens = 2 if "v.dist_token" in plain else 1
        n = plain["v.pos_embed"].shape[1] - cls_tokens
        pairs = _pairs(_run(strides_that_fit, sd, case, tdim), case)
        truth = _brute_force(128, tdim, fshape, tshape, n)
        if pairs and set(pairs) == _brute_force(128, tdim, fshape, tshape, n + cls_tokens):
            raise ExerciseError(f"strides_that_fit on {case}: your pairs give {n + cls_tokens} "
                                f"patches, the checkpoint has {n} -- v.pos_embed also holds the "
                                f"{cls_tokens} class-token rows: subtract them")
        for fs, ts in pairs:
            if not (1 <= fs <= fshape and 1 <= ts <= tshape):
                raise ExerciseError(f"strides_that_fit on {case}: ({fs}, {ts}) is outside 1..{fshape} "
                                    f"x 1..{tshape}: a stride larger than the patch side skips input")
            got_n = _n_patches(128, tdim, fshape, tshape, fs, ts)
            if got_n != n:
                if got_n == n + cls_tokens:
                    hint = " -- v.pos_embed also holds the class-token rows: subtract them"
                elif cls_tokens == 1 and got_n == n - 1:
                    hint = (" -- this checkpoint has ONE class token (no v.dist_token, as "
                            "base_nokd), so v.pos_embed holds 1 class-token row, not 2: read the "
                            "number of class tokens from the state dict")
                else:
                    hint = " -- a conv gives (input - patch) // stride + 1 positions per axis"
                raise ExerciseError(f"strides_that_fit on {case}: stride ({fs}, {ts}) gives "
                                    f"{got_n} patches on 128 x {tdim}, the checkpoint has {n}{hint}")
        if recipe not in pairs:
            hint = (f" -- you found no pair at all: the checkpoint has {n} patches (v.pos_embed "
                    f"holds {cls_tokens} class-token rows before them), and a conv gives "
                    "(input - patch) // stride + 1 positions per axis" if not pairs else "")
            raise ExerciseError(f"strides_that_fit on {case}: the stride this checkpoint was "
                                f"fine-tuned with, {recipe}, is missing{hint}")
        missing = sorted(truth - set(pairs))
        if missing:
            hint = (" -- with a 128-bin frame there is one frequency row, whatever fstride is"
                    if fshape == 128 else "")
            raise ExerciseError(f"strides_that_fit on {case}: {len(missing)} pair(s) that also "
                                f"give {n} patches are missing, e.g. {missing[:3]}{hint}")
    passed(8, 2, "every stride pair you list reproduces the patch count, and none is missing")


# ---------------------------------------------------------------------------- exercise 3


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


def _count_cases(hidden: bool) -> list[tuple[str, Mapping[str, Tensor]]]:
    cases = [
        ("the official tiny patch layout (module. keys)", make_official_like("tiny", "patch")),
        ("a mini pretraining model (no prefix)", _mini(16, 16, 256, 810)),
        ("a mini fine-tuning model with a 10-class mlp_head (no prefix)",
         _finetuned(16, 16, 16, 16, 128, 811, False)),
    ]
    if hidden:
        rng = random.Random(hidden_seed(812))
        tdim = 2 * rng.randint(16, 64)
        cases += [
            ("the official tiny frame layout (module. keys)",
             make_official_like("tiny", "frame", seed=rng.randint(0, 99))),
            (f"a mini frame fine-tuning model on 128 x {tdim} (module. keys)",
             _finetuned(128, 2, 128, 1, tdim, rng.randint(0, 10**6), True)),
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
    passed(8, 3, "your parameter counts add up, part by part")
