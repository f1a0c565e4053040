"""Grading a submission without trusting it: the verdict is computed outside the student's code.

A submission is untrusted code. It runs in a **worker**, a separate Python process (an IPython
shell, so magics work as in a notebook) that executes the submission's cells with the graded
check cells left out (only their imports run), in a fresh temporary folder, with a scrubbed
environment (no grader seed), resource limits (address space, processes, file size), as user
``nobody`` when the grader is root (and nobody can run this Python), and a time limit per cell.
The **grader** (this process) imports the checkers and the library modules they use before the
worker starts, then runs each graded check cell itself with every name the cell takes from the
notebook (``random_mask``) bound to a :class:`Remote` (modules and ``ssast_teach.exercises``
names the instructor's notebook imports are the grader's own): calling it sends the arguments
to the worker, which calls the student's function and sends back the result as plain data.

What crosses the boundary:

* grader -> worker: the arguments, pickled (the worker unpickles what the grader made), and the
  grader's global random states (torch, ``random``, numpy) when they changed since the last
  call, set in the worker before the call;
* worker -> grader: JSON plus one safetensors blob, never a pickle. Accepted values are None,
  bool, int, float, str, lists, tuples, dicts, sets of those, ``torch.Tensor`` (any dtype
  safetensors stores; ``requires_grad`` is carried, the graph is not), numpy arrays and
  scalars, ``torch.dtype``, ``torch.Size``, references to objects of the arguments (a returned
  parameter of the model passed in is that parameter), ``nn.Module`` objects of the library or
  ``torch.nn`` (rebuilt from their class, plain attributes, library dataclasses, parameters and
  buffers), and anything else as a **handle**, an opaque :class:`Remote` the checker can only
  call. The grader rebuilds every value from its own classes, after checking its structure,
  types, shapes and sizes; comparisons then run on its objects, never on the student's.
* in-place changes to arguments come back too: tensors (same shape and dtype), generators'
  and ``random.Random``'s states, modules' ``requires_grad`` flags and train/eval modes.

An argument that cannot be pickled, or a value that cannot be rebuilt, fails the check with a
message saying so (fail closed): the exercise then needs grading by hand.

Each check cell has ``timeout`` seconds in all; a call that runs over, or kills its worker,
fails the cell, and the next check cell gets a fresh worker (the submission's cells run again).
When grading ends every process the worker started is killed and its folder removed.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import ctypes
import dataclasses
import importlib
import io
import json
import os
import pickle
import pkgutil
import random
import re
import secrets
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import ssast_teach
from ssast_teach.exercises import GRADER_SEED_ENV, GRADING_ENV

DEFAULT_MEMORY_MB = 8192  # address space of the worker; torch alone maps about 1.5 GiB
# processes (threads count) the worker may add to its user's: room for torch's thread pools
EXTRA_PROCESSES = 64 + 2 * (os.cpu_count() or 1)
MAX_FILE_BYTES = 1 << 30  # largest file the worker may write
MAX_HEADER = 64 << 20  # largest JSON part of one answer from the worker
MAX_BLOB = 1 << 30  # largest tensor part
MAX_DEPTH = 32  # nesting of an answer
STARTUP_SECONDS = 120  # for the worker to import IPython and answer
MAX_RESTARTS = 3  # fresh workers after the first, for cells that time out or kill it
OUTPUT_CHARS = 4000  # what is kept of a cell's printed output
WORKER_TOKEN_ENV = "SSAST_TEACH_WORKER"
LIBRARIES = ("ssast_teach", "torch", "timm")  # whose modules and dataclasses a result may be
NOBODY = 65534
# builtin exceptions a worker's error may be raised as in the grader (others get a stand-in)
BUILTIN_ERRORS = {
    name: obj for name, obj in vars(builtins).items()
    if isinstance(obj, type) and issubclass(obj, Exception)
}  # fmt: skip


class GradingError(Exception):
    """The grader could not get an answer from the worker (fails the check it happened in)."""


# ---------------------------------------------------------------------------- framing


def _write_frame(fd: int, header: dict, blob: bytes = b"") -> None:
    data = json.dumps(header).encode()
    payload = struct.pack(">Q", len(data)) + data + struct.pack(">Q", len(blob)) + blob
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, left = [], n
    while left:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int, deadline: float | None = None) -> tuple[Any, bytes]:
    (size,) = struct.unpack(">Q", _read_exact(fd, 8, deadline))
    if size > MAX_HEADER:
        raise GradingError(f"the worker sent a {size}-byte header (limit {MAX_HEADER})")
    header = json.loads(_read_exact(fd, size, deadline))
    (size,) = struct.unpack(">Q", _read_exact(fd, 8, deadline))
    if size > MAX_BLOB:
        raise GradingError(f"the worker sent {size} bytes of tensors (limit {MAX_BLOB})")
    return header, _read_exact(fd, size, deadline)


# ---------------------------------------------------------------------------- both sides


def _leaves(args: tuple, kwargs: dict) -> dict[tuple, Any]:
    """The objects of a call's arguments an in-place change or a reference can name, by path
    (the same walk on both sides, so a path names the same object in each)."""
    out: dict[tuple, Any] = {}

    def walk(obj: Any, path: tuple, depth: int) -> None:
        if depth > MAX_DEPTH:
            return
        if isinstance(obj, torch.Tensor | torch.Generator | random.Random):
            out[path] = obj
        elif isinstance(obj, nn.Module):
            out[path] = obj
            for name, sub in obj.named_modules():
                out[(*path, "m:" + name)] = sub
            for name, t in [*obj.named_parameters(), *obj.named_buffers()]:
                out[(*path, "t:" + name)] = t
        elif isinstance(obj, list | tuple):
            for i, value in enumerate(obj):
                walk(value, (*path, i), depth + 1)
        elif isinstance(obj, dict):
            for key, value in obj.items():
                if isinstance(key, str | int) and not isinstance(key, bool):
                    walk(value, (*path, key), depth + 1)

    for i, value in enumerate(args):
        walk(value, ("a", i), 0)
    for key, value in kwargs.items():
        walk(value, ("k", key), 0)
    return out


def _state(obj: Any) -> Any:
    """What an in-place change of a leaf is compared by (and, for generators, sent as)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    if isinstance(obj, random.Random):
        return obj.getstate()
    return (obj.training, {n: p.requires_grad for n, p in obj.named_parameters(recurse=False)})


# ---------------------------------------------------------------------------- the worker side


class _Worker:
    """The state of the worker process: the shell, the handles it gave out."""

    shell: Any = None
    handles: dict[int, Any] = {}


def _resolve_remote(target: list) -> Any:
    """Unpickling a :class:`Remote` in the worker gives the object it stands for."""
    kind, key = target
    if kind == "name":
        if key not in _Worker.shell.user_ns:
            raise NameError(f"name {key!r} is not defined")
        return _Worker.shell.user_ns[key]
    return _Worker.handles[key]


def _encode(obj: Any, tensors: dict, refs: dict[int, tuple], depth: int = 0) -> Any:
    """A value as plain data (worker side): JSON, with tensors by key into ``tensors``."""
    if depth > MAX_DEPTH:
        raise ValueError(f"the value is nested deeper than {MAX_DEPTH}")
    if id(obj) in refs and not isinstance(obj, bool | int | float | str | type(None)):
        return {"t": "ref", "path": list(refs[id(obj)])}
    if obj is None or type(obj) in (bool, int, str):
        return obj
    if type(obj) is float:
        return {"t": "float", "v": repr(obj)}
    if isinstance(obj, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = obj.detach().cpu().as_subclass(torch.Tensor).contiguous().clone()
        return {"t": "tensor", "k": key, "rg": bool(obj.requires_grad)}
    if isinstance(obj, np.ndarray) and obj.dtype != object:
        key = str(len(tensors))
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj)).clone()
        return {"t": "ndarray", "k": key}
    if isinstance(obj, np.generic) and not isinstance(obj, np.object_):
        return {"t": "np", "dtype": obj.dtype.str, "v": _encode(obj.item(), tensors, refs)}
    if isinstance(obj, torch.dtype):
        return {"t": "dtype", "v": str(obj).removeprefix("torch.")}
    if type(obj) in (list, tuple, set, frozenset, torch.Size):
        kind = {list: "list", tuple: "tuple", set: "set", frozenset: "frozenset"}.get(
            type(obj), "size"
        )
        return {"t": kind, "v": [_encode(v, tensors, refs, depth + 1) for v in obj]}
    if type(obj) in (dict, OrderedDict):
        items = [[_encode(k, tensors, refs, depth + 1), _encode(v, tensors, refs, depth + 1)]
                 for k, v in obj.items()]  # fmt: skip
        return {"t": "dict" if type(obj) is dict else "odict", "v": items}
    if isinstance(obj, nn.Module) and _library_class(type(obj)):
        return _encode_module(obj, tensors, refs, depth)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type) and _library_class(type(obj)):
        fields = {f.name: _encode(getattr(obj, f.name), tensors, refs, depth + 1)
                  for f in dataclasses.fields(obj) if f.init}  # fmt: skip
        return {"t": "dataclass", "cls": _class_name(type(obj)), "v": fields}
    key = len(_Worker.handles)
    _Worker.handles[key] = obj
    return {"t": "handle", "id": key, "type": type(obj).__name__[:60]}


def _encode_module(module: nn.Module, tensors: dict, refs: dict, depth: int) -> dict:
    plain = (bool, int, float, str, type(None), tuple, list, dict, torch.dtype, torch.Size)
    attrs = {
        k: _encode(v, tensors, refs, depth + 1) for k, v in vars(module).items()
        if not k.startswith("_") and k != "training"
        and (isinstance(v, plain) or dataclasses.is_dataclass(v))
    }  # fmt: skip
    return {
        "t": "module",
        "cls": _class_name(type(module)),
        "training": module.training,
        "attrs": attrs,
        "children": {n: _encode(m, tensors, refs, depth + 1)
                     for n, m in module._modules.items() if m is not None},  # fmt: skip
        "params": {n: _encode(p, tensors, refs, depth + 1)
                   for n, p in module._parameters.items() if p is not None},  # fmt: skip
        "buffers": {n: _encode(b, tensors, refs, depth + 1)
                    for n, b in module._buffers.items() if b is not None},  # fmt: skip
    }


def _class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _library_class(cls: type) -> bool:
    return cls.__module__.split(".")[0] in LIBRARIES


def _worker_answer(value: Any, refs: dict, mutated: list) -> tuple[dict, bytes]:
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    header = {"ok": True, "value": _encode(value, tensors, refs), "mutated": []}
    for path, new in mutated:
        header["mutated"].append([list(path), _encode(new, tensors, {})])
    return header, save(tensors) if tensors else b""


def _worker_call(target: list, blob: bytes) -> tuple[dict, bytes]:
    request = pickle.loads(blob)
    args, kwargs = request["args"], request["kwargs"]
    if request["rng"] is not None:
        torch.set_rng_state(request["rng"]["torch"])
        random.setstate(request["rng"]["random"])
        np.random.set_state(request["rng"]["numpy"])
    fn = _resolve_remote(target)
    leaves = _leaves(args, kwargs)
    before = {path: _state(obj) for path, obj in leaves.items()}
    try:
        value = fn(*args, **kwargs)
    except BaseException as error:  # noqa: BLE001 - the student's error goes back as text
        return {"ok": False, "error": [type(error).__name__, str(error)[:OUTPUT_CHARS]]}, b""
    mutated = []
    for path, obj in leaves.items():
        now = _state(obj)
        old = before[path]
        if isinstance(obj, torch.Tensor):
            changed = now.shape == old.shape and not torch.equal(now, old)
            value_now = now
        elif isinstance(obj, torch.Generator):
            changed, value_now = not torch.equal(now, old), now
        else:
            changed, value_now = now != old, now
        if changed:
            mutated.append((path, value_now))
    refs = {id(obj): path for path, obj in leaves.items()}
    return _worker_answer(value, refs, mutated)


def _worker_cell(source: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = _Worker.shell.run_cell(source, store_history=True)
    error = result.error_before_exec or result.error_in_exec
    return {
        "ok": error is None,
        "stdout": out.getvalue()[:OUTPUT_CHARS],
        "error": [type(error).__name__, str(error)[:OUTPUT_CHARS]] if error else None,
    }


def _limit(memory_mb: int, processes: int) -> None:
    import resource

    limits = [(resource.RLIMIT_FSIZE, MAX_FILE_BYTES), (resource.RLIMIT_CORE, 0)]
    if memory_mb > 0:
        limits.append((resource.RLIMIT_AS, memory_mb << 20))
    if processes > 0:
        limits.append((resource.RLIMIT_NPROC, processes))
    for which, value in limits:
        resource.setrlimit(which, (value, value))


def worker_main(fd_in: int, fd_out: int, memory_mb: int, processes: int) -> None:
    """The worker's loop: run cells and calls as the grader asks (never trusted by it)."""
    _limit(memory_mb, processes)
    from IPython.core.interactiveshell import InteractiveShell

    class Shell(InteractiveShell):
        def enable_gui(self, gui=None):  # no event loop: figures are drawn off screen
            pass

    _Worker.shell = Shell.instance()
    _write_frame(fd_out, {"ok": True, "ready": True})
    while True:
        header, blob = _read_frame(fd_in)
        op = header["op"]
        if op == "bye":
            return
        try:
            if op == "cell":
                answer, data = _worker_cell(header["source"]), b""
            else:
                answer, data = _worker_call(header["target"], blob)
        except BaseException as error:  # noqa: BLE001 - e.g. a result that cannot be encoded
            answer = {"ok": False, "error": [type(error).__name__, str(error)[:OUTPUT_CHARS]]}
            data = b""
        _write_frame(fd_out, answer, data)


# ---------------------------------------------------------------------------- the grader side


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise GradingError(f"the worker's answer is malformed: {what}")


def _library_object(name: str) -> Any:
    """A class of the library or of torch named ``module:qualname``, from the grader's loaded
    modules only (nothing is imported on the worker's word)."""
    _check(isinstance(name, str) and name.count(":") == 1, f"class name {name!r}")
    module_name, qualname = name.split(":")
    module = sys.modules.get(module_name)
    _check(module is not None and module_name.split(".")[0] in LIBRARIES,
           f"class {name!r} is not from a loaded library module")  # fmt: skip
    obj: Any = module
    for part in qualname.split("."):
        _check(part.isidentifier() and not part.startswith("__"), f"class name {name!r}")
        obj = getattr(obj, part, None)
    _check(isinstance(obj, type), f"{name!r} is not a class")
    return obj


class _Decoder:
    """Rebuild a worker's value from plain data, checking it on the way."""

    def __init__(self, session: GradingSession, blob: bytes, leaves: dict[tuple, Any]):
        self.session, self.leaves = session, leaves
        self.tensors: dict[str, torch.Tensor] = {}
        if blob:
            from safetensors.torch import load

            try:
                self.tensors = load(blob)
            except Exception as error:  # noqa: BLE001 - any parse error is a malformed answer
                raise GradingError(f"the worker's tensors do not parse: {error}") from None
        self.used: set[str] = set()

    def tensor(self, key: Any) -> torch.Tensor:
        _check(isinstance(key, str) and key in self.tensors and key not in self.used,
               f"tensor key {key!r}")  # fmt: skip
        self.used.add(key)
        value = self.tensors[key]
        _check(type(value) is torch.Tensor and value.layout == torch.strided, "a tensor")
        return value

    def value(self, data: Any, depth: int = 0) -> Any:
        _check(depth <= MAX_DEPTH, "nested too deep")
        if data is None or type(data) in (bool, int, str):
            return data
        _check(type(data) is dict and isinstance(data.get("t"), str), f"value {data!r:.60}")
        kind, v = data["t"], data.get("v")
        if kind == "float":
            _check(isinstance(v, str) and re.fullmatch(r"-?(inf|nan|[0-9.e+-]+)", v) is not None,
                   f"float {v!r:.40}")  # fmt: skip
            return float(v)
        if kind in ("list", "tuple", "set", "frozenset", "size"):
            _check(type(v) is list, f"{kind} items")
            items = [self.value(x, depth + 1) for x in v]
            if kind == "size":
                _check(all(type(x) is int and x >= 0 for x in items), "a torch.Size")
                return torch.Size(items)
            try:
                return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[kind](
                    items
                )
            except TypeError as error:  # an unhashable set member
                raise GradingError(f"the worker's answer is malformed: {error}") from None
        if kind in ("dict", "odict"):
            _check(type(v) is list and all(type(p) is list and len(p) == 2 for p in v), "items")
            try:
                return (dict if kind == "dict" else OrderedDict)(
                    (self.value(k, depth + 1), self.value(x, depth + 1)) for k, x in v
                )
            except TypeError as error:
                raise GradingError(f"the worker's answer is malformed: {error}") from None
        if kind == "tensor":
            value = self.tensor(data.get("k"))
            if data.get("rg") is True and (value.is_floating_point() or value.is_complex()):
                value.requires_grad_(True)
            return value
        if kind == "ndarray":
            return self.tensor(data.get("k")).numpy()
        if kind == "np":
            dtype = data.get("dtype")
            _check(isinstance(dtype, str) and len(dtype) < 8, "numpy dtype")
            try:
                np_type = np.dtype(dtype)
            except TypeError:
                raise GradingError(f"the worker's answer is malformed: dtype {dtype!r}") from None
            _check(np_type.kind in "biufc", f"numpy dtype {dtype!r}")
            return np_type.type(self.value(v, depth + 1))
        if kind == "dtype":
            dtype = getattr(torch, v, None) if isinstance(v, str) and v.isidentifier() else None
            _check(isinstance(dtype, torch.dtype), f"dtype {v!r:.40}")
            return dtype
        if kind == "ref":
            path = data.get("path")
            _check(type(path) is list and tuple(path) in self.leaves, f"reference {path!r:.80}")
            return self.leaves[tuple(path)]
        if kind == "handle":
            _check(type(data.get("id")) is int, "handle id")
            return Remote(self.session, ["handle", data["id"]], f"<{data.get('type', '?')!s:.60}>")
        if kind == "dataclass":
            cls = _library_object(data.get("cls"))
            _check(dataclasses.is_dataclass(cls) and type(v) is dict, "a dataclass")
            try:
                return cls(**{k: self.value(x, depth + 1) for k, x in v.items()})
            except (TypeError, ValueError) as error:
                raise GradingError(f"the worker's {cls.__name__} does not rebuild: {error}") from None
        if kind == "module":
            return self.module(data, depth)
        raise GradingError(f"the worker's answer is malformed: unknown kind {kind!r:.40}")

    def module(self, data: dict, depth: int) -> nn.Module:
        cls = _library_object(data.get("cls"))
        _check(issubclass(cls, nn.Module), f"{cls.__name__} is not a module")
        parts = [data.get(k) for k in ("attrs", "children", "params", "buffers")]
        _check(all(type(p) is dict for p in parts), "module parts")
        attrs, children, params, buffers = parts
        module = cls.__new__(cls)
        nn.Module.__init__(module)
        for name, value in attrs.items():
            _check(name.isidentifier() and not name.startswith("_"), f"attribute {name!r:.40}")
            value = self.value(value, depth + 1)
            _check(_plain(value), f"attribute {name!r:.40}: only plain data rebuilds a module")
            object.__setattr__(module, name, value)
        for name, child in children.items():
            _check("." not in name and isinstance(child, dict) and child.get("t") == "module",
                   f"child {name!r:.40}")  # fmt: skip
            module._modules[name] = self.module(child, depth + 1)
        for name, value in params.items():
            tensor = self.value(value, depth + 1)
            _check(isinstance(tensor, torch.Tensor), f"parameter {name!r:.40}")
            module._parameters[name] = nn.Parameter(tensor.detach(), tensor.requires_grad)
        for name, value in buffers.items():
            tensor = self.value(value, depth + 1)
            _check(isinstance(tensor, torch.Tensor), f"buffer {name!r:.40}")
            module._buffers[name] = tensor
        _check(type(data.get("training")) is bool, "module mode")
        module.training = data["training"]
        return module

    def apply(self, mutated: Any) -> None:
        """Make the worker's in-place changes to the grader's own arguments."""
        _check(type(mutated) is list, "in-place changes")
        for item in mutated:
            _check(type(item) is list and len(item) == 2 and type(item[0]) is list, "a change")
            path, encoded = tuple(item[0]), item[1]
            _check(path in self.leaves, f"changed argument {path!r:.80}")
            obj, new = self.leaves[path], self.value(encoded)
            if isinstance(obj, torch.Tensor):
                _check(isinstance(new, torch.Tensor) and new.shape == obj.shape
                       and new.dtype == obj.dtype, f"the new value of argument {path}")  # fmt: skip
                with torch.no_grad():
                    obj.copy_(new)
            elif isinstance(obj, torch.Generator):
                _check(isinstance(new, torch.Tensor) and new.dtype == torch.uint8
                       and new.shape == obj.get_state().shape, "a generator state")  # fmt: skip
                obj.set_state(new)
            elif isinstance(obj, random.Random):
                _check(_random_state(new), "a random.Random state")
                obj.setstate(new)
            else:
                _check(type(new) is tuple and len(new) == 2 and type(new[0]) is bool
                       and type(new[1]) is dict, "a module's flags")  # fmt: skip
                own = dict(obj.named_parameters(recurse=False))
                _check(set(new[1]) == set(own)
                       and all(type(f) is bool for f in new[1].values()), "parameter flags")  # fmt: skip
                obj.training = new[0]
                for name, flag in new[1].items():
                    own[name].requires_grad_(flag)


def _plain(value: Any) -> bool:
    """Data and nothing that runs: no handle, no module, no tensor (a module's attributes)."""
    if isinstance(value, list | tuple | set | frozenset):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(_plain(k) and _plain(v) for k, v in value.items())
    if dataclasses.is_dataclass(value):
        return all(_plain(getattr(value, f.name)) for f in dataclasses.fields(value))
    return value is None or type(value) in (bool, int, float, str, torch.dtype)


def _random_state(state: Any) -> bool:
    return (
        type(state) is tuple and len(state) == 3 and state[0] == 3
        and type(state[1]) is tuple and len(state[1]) == 625
        and all(type(v) is int and 0 <= v < 1 << 32 for v in state[1])
        and (state[2] is None or type(state[2]) is float)
    )  # fmt: skip


class Remote:
    """Stands, in the grader, for a function (or object) of the submission: calling it calls
    the student's function in the worker. It has no other behaviour: compared, it equals only
    itself."""

    def __init__(self, session: GradingSession, target: list, name: str):
        self._session, self._target = session, target
        self.__name__ = self.__qualname__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._session.call(self._target, args, kwargs)

    def __repr__(self) -> str:
        return f"<the submission's {self.__name__}>"

    def __reduce__(self) -> tuple:
        return _resolve_remote, (self._target,)


def _remote_error(ename: Any, evalue: Any) -> Exception:
    """The worker's exception, raised in the grader: a builtin one by name, else a stand-in
    class of the same name (so checkers word it as they would in the notebook)."""
    ename = ename if isinstance(ename, str) and ename.isidentifier() else "Exception"
    evalue = evalue if isinstance(evalue, str) else ""
    cls = BUILTIN_ERRORS.get(ename) or type(ename[:60], (Exception,), {})
    return cls(evalue)


# ---------------------------------------------------------------------------- processes


def _prctl(option: int, value: int) -> None:
    """Linux prctl, best effort (elsewhere the grader goes on without it)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 4, 36


def _processes() -> dict[int, tuple[int, int]]:
    """``pid: (parent pid, real uid)`` of every process, from /proc."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        try:
            out[int(entry.name)] = (int(fields["PPid"]), int(fields["Uid"].split()[0]))
        except (KeyError, ValueError):
            continue
    return out


def _tasks_of(uid: int) -> int:
    """Threads of all processes of ``uid`` (what RLIMIT_NPROC counts)."""
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    count += sum(1 for _ in (entry / "task").iterdir())
    return count


def _nobody_can_run() -> bool:
    """Whether user nobody can start this Python and read the library (every folder on the
    way searchable by others, the files readable)."""
    import stat

    needed = [Path(os.path.realpath(sys.executable)), Path(ssast_teach.__file__).resolve(),
              Path(torch.__file__).resolve()]  # fmt: skip
    for path in needed:
        try:
            if not path.stat().st_mode & stat.S_IROTH:
                return False
            if not all(p.stat().st_mode & stat.S_IXOTH for p in path.parents):
                return False
        except OSError:
            return False
    return True


def _descendants(root: int, table: dict[int, tuple[int, int]]) -> set[int]:
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, (ppid, _) in table.items() if ppid in frontier} - found
        found |= frontier
    return found


class WorkerProcess:
    """One worker: started, fed the submission's cells, asked for calls, then killed with every
    process it started; its temporary folder removed."""

    def __init__(self, *, scale: str, timeout: float, memory_mb: int, course: Path | None):
        self.scale, self.timeout, self.memory_mb = scale, timeout, memory_mb
        self.course = course
        self.notes: list[str] = []
        self.proc: subprocess.Popen | None = None
        self.folder: Path | None = None
        self.dead: str | None = None

    def start(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="ssast-grade-"))
        uid = os.getuid()
        user = NOBODY if uid == 0 and _nobody_can_run() else None
        if uid == 0 and user is None:
            self.notes.append(
                "the submission ran as root (user nobody cannot run this Python): the process "
                "limit does not bind root and its files were not protected; grade as an "
                "unprivileged user (chapters/INSTRUCTORS.md)"
            )
        if self.course is not None and (self.course / "pyproject.toml").is_file():
            # the folder is a checkout to course_root(): runs land here, data/ is the course's
            shutil.copy(self.course / "pyproject.toml", self.folder / "pyproject.toml")
            if (self.course / "data").is_dir():
                (self.folder / "data").symlink_to(self.course / "data")
        if user is not None:
            os.chown(self.folder, NOBODY, -1)
        processes = _tasks_of(user if user is not None else uid) + EXTRA_PROCESSES
        worker_reads, grader_writes = os.pipe()
        grader_reads, worker_writes = os.pipe()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.folder),
            "TMPDIR": str(self.folder),
            "IPYTHONDIR": str(self.folder / ".ipython"),
            "MPLBACKEND": "Agg",
            "LANG": "C.UTF-8",
            "COURSE_SCALE": self.scale,
            GRADING_ENV: "1",
            WORKER_TOKEN_ENV: self.folder.name,
        }
        for name in ("PYTHONPATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES"):
            if name in os.environ:
                env[name] = os.environ[name]
        self._before = set(_descendants(os.getpid(), _processes()))
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        code = (
            "import sys; from ssast_teach.grading import worker_main; "
            "worker_main(*map(int, sys.argv[1:5]))"
        )
        with open(self.folder / "worker.log", "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code, str(worker_reads), str(worker_writes),
                 str(self.memory_mb), str(processes)],
                pass_fds=(worker_reads, worker_writes), env=env, cwd=self.folder,
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                user=user, group=NOBODY if user is not None else None,
                extra_groups=[] if user is not None else None,
            )  # fmt: skip
        os.close(worker_reads)
        os.close(worker_writes)
        self.fd_out, self.fd_in = grader_writes, grader_reads
        try:
            self._receive(time.monotonic() + STARTUP_SECONDS)
        except (GradingError, TimeoutError, EOFError) as error:
            log_tail = (self.folder / "worker.log").read_text(errors="replace")[-400:]
            self.stop()
            self.dead = f"the grading worker did not start ({error!r}): {log_tail}"
            raise GradingError(self.dead) from None

    def _receive(self, deadline: float) -> tuple[Any, bytes]:
        return _read_frame(self.fd_in, deadline)

    def ask(self, header: dict, blob: bytes, deadline: float) -> tuple[Any, bytes]:
        """Send one request and wait for its answer until ``deadline``; a worker that runs
        over, dies or garbles the exchange is stopped and raises :class:`GradingError`."""
        if self.dead:
            raise GradingError(self.dead)
        try:
            _write_frame(self.fd_out, header, blob)
            return self._receive(deadline)
        except TimeoutError:
            self.dead = f"timed out: the cell ran longer than {self.timeout:g} s and was stopped"
        except (EOFError, OSError, ValueError, GradingError) as error:
            self.dead = self._death(error)
        self.stop()
        raise GradingError(self.dead)

    def _death(self, error: BaseException) -> str:
        try:
            code = self.proc.wait(timeout=5) if self.proc else None
        except subprocess.TimeoutExpired:
            code = None
        if code is not None and code < 0:
            how = f"was killed by signal {signal.Signals(-code).name}"
            if -code == signal.SIGKILL:
                how += f" (out of memory? the limit is {self.memory_mb} MiB)"
        elif code is not None:
            how = f"exited with code {code}"
        else:
            how = f"broke the exchange ({error})"
        log = self.folder / "worker.log" if self.folder else None
        tail = log.read_text(errors="replace")[-300:].strip() if log and log.is_file() else ""
        return f"the submission's process {how}" + (f"; its last words: {tail}" if tail else "")

    def stop(self) -> None:
        """Kill the worker and every process it started (even those that left its session),
        reap them, remove its folder."""
        if self.proc is not None:
            with contextlib.suppress(OSError):
                _write_frame(self.fd_out, {"op": "bye"})
            for fd in (self.fd_out, self.fd_in):
                with contextlib.suppress(OSError):
                    os.close(fd)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            for _ in range(200):
                table = _processes()
                stray = _descendants(os.getpid(), table) - self._before
                if not stray:
                    break
                for pid in stray:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                for pid in stray:
                    with contextlib.suppress(ChildProcessError, OSError):
                        os.waitpid(pid, os.WNOHANG)
                time.sleep(0.01)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            self.proc = None
            _prctl(PR_SET_CHILD_SUBREAPER, 0)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


# ---------------------------------------------------------------------------- a session


@dataclasses.dataclass
class CellRun:
    """What running one notebook cell gave (in the worker, or a check cell in the grader)."""

    stdout: str = ""
    error: tuple[str, str] | None = None
    stopped: str | None = None  # why the cell was stopped (timeout, a dead worker)


class GradingSession:
    """The submission's cells in a worker; check cells run here, in one namespace (as in a
    notebook), where each name they take from the notebook is a trusted import of the
    instructor's notebook or a :class:`Remote` for the submission's object."""

    def __init__(self, cells: list[tuple[int, str]], *, scale: str, timeout: float,
                 memory_mb: int = DEFAULT_MEMORY_MB, course: Path | None = None):  # fmt: skip
        self.cells, self.scale, self.timeout, self.memory_mb = cells, scale, timeout, memory_mb
        self.course = course
        self.notes: list[str] = []  # what the grade's reader should know (how it ran)
        self.worker: WorkerProcess | None = None
        self.skipped: set[int] = set()  # cells that stopped a worker: left out of the next
        self.runs: dict[int, CellRun] = {}
        self.restarts = -1
        self.deadline = 0.0
        self.failure: str | None = None
        self.sent_rng: tuple | None = None  # the global random states the worker last got
        self.namespace: dict[str, Any] = {"__name__": "__grading__", "__builtins__": builtins}

    def bind(self, names: set[str], imports: dict[str, tuple[str, str | None]]) -> None:
        """Bind each of ``names`` not bound yet: to the module, or the object of
        ``ssast_teach.exercises``, that the instructor's notebook imports under that name
        (imported here, now); anything else to a :class:`Remote`, so that a library function
        the notebook imports under an exercise's name (``masking_frequency``) is never what
        a check judges."""
        for name in sorted(names - set(self.namespace)):
            obj = None
            if name in imports:
                module, attr = imports[name]
                obj = importlib.import_module(module)
                obj = obj if attr is None else _attribute_or_module(obj, attr)
                if not (isinstance(obj, type(os)) or module.startswith("ssast_teach.exercises")):
                    obj = None
            self.namespace[name] = obj if obj is not None else Remote(self, ["name", name], name)

    def start(self) -> WorkerProcess:
        """A live worker that has run the submission's cells (a fresh one if the last died)."""
        while self.worker is None or self.worker.dead:
            if self.worker is not None:
                self.worker.stop()
            self.restarts += 1
            if self.restarts > MAX_RESTARTS:
                raise GradingError(
                    f"the submission's process was stopped {MAX_RESTARTS + 1} times; the "
                    "remaining checks did not run"
                )
            self.worker = WorkerProcess(scale=self.scale, timeout=self.timeout,
                                        memory_mb=self.memory_mb, course=self.course)  # fmt: skip
            self.worker.start()
            self.sent_rng = None
            self.notes = list(dict.fromkeys(self.notes + self.worker.notes))
            for index, source in self.cells:
                if index in self.skipped:
                    continue
                try:
                    header, _ = self.worker.ask(
                        {"op": "cell", "source": source}, b"", time.monotonic() + self.timeout
                    )
                except GradingError as error:
                    self.skipped.add(index)
                    self.runs[index] = CellRun(stopped=str(error))
                    break
                self.runs[index] = _cell_run(header)
        return self.worker

    def call(self, target: list, args: tuple, kwargs: dict) -> Any:
        """Call the submission's function ``target`` in the worker; its result, rebuilt."""
        rng = {"torch": torch.get_rng_state(), "random": random.getstate(),
               "numpy": np.random.get_state()}  # fmt: skip
        seen = (bytes(rng["torch"].numpy()), rng["random"], rng["numpy"][1].tobytes(),
                rng["numpy"][2:])  # fmt: skip
        # sent when they changed: the worker's global RNGs otherwise go on as the grader's would
        rng, self.sent_rng = (None if seen == self.sent_rng else rng), seen
        try:
            blob = pickle.dumps({"args": args, "kwargs": kwargs, "rng": rng}, protocol=5)
        except Exception as error:  # noqa: BLE001 - pickle raises many types
            raise GradingError(
                f"the grader cannot send these arguments to the submission ({error}); "
                "grade this exercise by hand"
            ) from None
        try:
            if self.worker is None:
                raise GradingError(self.failure or "the submission's process is not running")
            header, data = self.worker.ask({"op": "call", "target": target}, blob, self.deadline)
        except GradingError as error:
            self.failure = self.failure or str(error)
            raise
        _check(type(header) is dict and type(header.get("ok")) is bool, "no status")
        if not header["ok"]:
            error = header.get("error")
            _check(type(error) is list and len(error) == 2, "an error")
            if self.memory_mb > 0 and re.search(r"MemoryError|allocate memory", f"{error}"):
                error = [error[0], f"{error[1]} (the memory limit is {self.memory_mb} MiB)"]
            raise _remote_error(*error)
        decoder = _Decoder(self, data, _leaves(args, kwargs))
        value = decoder.value(header.get("value"))
        decoder.apply(header.get("mutated"))
        return value

    def run_check(self, source: str) -> tuple[CellRun, Any]:
        """Run a check cell here. Returns what it printed or raised (or why it was stopped),
        and the value of its last expression (nbgrader's partial credit)."""
        self.failure = None
        try:
            self.start()  # a fresh worker if the last check stopped it
        except GradingError as error:
            self.worker, self.failure = None, str(error)
        self.deadline = time.monotonic() + self.timeout
        out, err = io.StringIO(), io.StringIO()
        run, shown = CellRun(), None
        try:
            tree = ast.parse(source)
            last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                exec(compile(tree, "<check cell>", "exec"), self.namespace)  # noqa: S102
                if last is not None:
                    expression = ast.Expression(last.value)
                    shown = eval(compile(expression, "<check cell>", "eval"), self.namespace)  # noqa: S307
        except Exception as error:  # noqa: BLE001 - a failed check, reported
            run.error = (type(error).__name__, str(error))
        run.stdout = out.getvalue()
        if err.getvalue():
            run.error = run.error or ("stderr", err.getvalue())
        run.stopped = self.failure
        return run, shown

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None


def _attribute_or_module(module: Any, attr: str) -> Any:
    if hasattr(module, attr):
        return getattr(module, attr)
    return importlib.import_module(f"{module.__name__}.{attr}")


def imports_only(source: str) -> str:
    """The top-level import statements of a check cell (hidden checks cut), one per line."""
    try:
        tree = ast.parse(_python_only(source))
    except SyntaxError:
        return ""
    return "\n".join(ast.unparse(n) for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom))


def notebook_imports(sources: list[str]) -> dict[str, tuple[str, str | None]]:
    """``name -> (module, attribute or None)`` for every top-level import of the instructor's
    cells, as a check cell may use a name an earlier cell imported."""
    found: dict[str, tuple[str, str | None]] = {}
    for source in sources:
        try:
            tree = ast.parse(_python_only(source))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        found[a.asname] = (a.name, None)
                    else:
                        found[a.name.split(".")[0]] = (a.name.split(".")[0], None)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    if a.name != "*":
                        found[a.asname or a.name] = (node.module, a.name)
    return found


def _cell_run(header: Any) -> CellRun:
    if type(header) is not dict:
        return CellRun(error=("GradingError", "a malformed answer"))
    error = header.get("error")
    stdout = header.get("stdout")
    return CellRun(
        stdout=stdout[:OUTPUT_CHARS] if isinstance(stdout, str) else "",
        error=(str(error[0])[:60], str(error[1])[:OUTPUT_CHARS])
        if type(error) is list and len(error) == 2 else None,
    )  # fmt: skip


def load_library(imports: dict[str, tuple[str, str | None]]) -> None:
    """Import now, before any submission code runs, the library modules the instructor's
    notebook imports (``imports``: see :func:`notebook_imports`) and every library module their
    checkers import, lazily or not: the checks then run the files as they were when grading
    began, whatever the submission writes."""
    pending = [m if a is None else f"{m}.{a}" for m, a in imports.values()]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen or name.split(".")[0] != "ssast_teach":
            continue
        seen.add(name)
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:  # ``from ssast_teach.x import name``: not a module
            continue
        path = getattr(module, "__file__", None)
        if not path or not module.__name__.startswith("ssast_teach.exercises"):
            continue
        for node in ast.walk(ast.parse(Path(path).read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                pending += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                pending += [a.name for a in node.names]


def free_names(source: str) -> set[str]:
    """The names a check cell may take from the notebook: read, not imported or defined in it,
    not builtins (a name it assigns counts too: ``f = check(f)`` reads the notebook's ``f``)."""
    tree = ast.parse(source)
    bound, read = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            read.add(node.id)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return {n for n in read - bound if not hasattr(builtins, n)}


@contextlib.contextmanager
def grader_environment(seed: int | None = None) -> Iterator[int]:
    """The grader's own settings while it grades: grading on, the hidden seed set (drawn at
    random unless given or already in ``SSAST_TEACH_GRADER_SEED``), this process not
    inspectable by others of its user (no ptrace, no /proc/<pid>/environ). Restored after."""
    saved = {k: os.environ.get(k) for k in (GRADING_ENV, GRADER_SEED_ENV)}
    if seed is None:
        seed = int(saved[GRADER_SEED_ENV]) if saved[GRADER_SEED_ENV] else secrets.randbelow(1 << 30)
    os.environ[GRADING_ENV], os.environ[GRADER_SEED_ENV] = "1", str(seed)
    _prctl(PR_SET_DUMPABLE, 0)
    try:
        yield seed
    finally:
        _prctl(PR_SET_DUMPABLE, 1)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ---------------------------------------------------------------------------- for review

# What a solution has no business reaching: (dotted name or attribute, why)
SUSPICIOUS = {
    "ssast_teach.exercises": "reaches the checkers (ssast_teach.exercises)",
    "ssast_teach.grading": "reaches the grader (ssast_teach.grading)",
    "ssast_teach.assignments": "reaches the grader (ssast_teach.assignments)",
    "sys.modules": "reaches sys.modules (the loaded modules, checkers included)",
    "set_custom_exc": "sets an IPython exception hook (set_custom_exc)",
    "excepthook": "changes an exception hook (excepthook)",
    "showtraceback": "changes how IPython shows errors (showtraceback)",
    "environ": "reads or changes the environment (os.environ)",
    "getenv": "reads the environment (getenv)",
    "putenv": "changes the environment (putenv)",
    "_exit": "exits the process (os._exit)",
    "sys.exit": "exits (sys.exit)",
    "fork": "forks a process",
    "builtins": "reaches builtins",
    "__builtins__": "reaches builtins",
    "ctypes": "uses ctypes",
    "importlib": "imports by name (importlib)",
    "gc.get_objects": "walks the interpreter's objects (gc)",
    "subprocess": "starts programs (subprocess)",
    "exec": "runs code from a string (exec)",
    "eval": "runs code from a string (eval)",
    "__import__": "imports by name (__import__)",
    "SSAST_TEACH_GRADER_SEED": "names the grader's seed variable",
    "SSAST_TEACH_GRADING": "names the grader's variable",
}


BARE = {"exec", "eval", "__import__"}  # flagged only as bare names (``model.eval()`` is fine)


def for_review(source: str, library: dict[str, str]) -> list[tuple[str, str]]:
    """``(name, why)`` for each thing in a cell's code that a grader should look at by hand:
    the library's own implementation of an exercise (``library``: dotted name -> exercise) and
    the names of :data:`SUSPICIOUS` (the checkers, sys.modules, exception hooks, the
    environment, exits, forks, dynamic code). Static, so a hint, not a proof."""
    try:
        tree = ast.parse(_python_only(source))
    except SyntaxError:
        return []
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"

    def dotted(node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = dotted(node.value)
            return f"{base}.{node.attr}" if base else node.attr
        return None

    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Attribute | ast.Name):
            names.append(dotted(node) or "")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names += [n for n in ("SSAST_TEACH_GRADER_SEED", "SSAST_TEACH_GRADING")
                      if n in node.value]  # fmt: skip
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ("getattr", "setattr", "delattr") and len(node.args) > 1 \
                and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
            names.append(f"{dotted(node.args[0]) or ''}.{node.args[1].value}")  # fmt: skip
    found: dict[str, str] = {}
    for name in names:
        for key, exercise in library.items():
            if name == key or name.startswith(key + "."):
                found.setdefault(name, f"calls the library's own {key} (the exercise {exercise})")
        for key, why in SUSPICIOUS.items():
            if "." in key or key in BARE:
                hit = name == key or (name.startswith(key + ".") and key not in BARE)
            else:
                hit = key in name.split(".")
            if hit:
                found.setdefault(name, why)
    return sorted(found.items())


def _python_only(source: str) -> str:
    """A cell's code with IPython's magics and shell escapes turned into Python, as IPython
    runs them (so that the analysis sees the same code)."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def library_references(check_source: str, namespace: dict[str, Any]) -> dict[str, str]:
    """``dotted name -> exercise`` of what a solution delegating to the library would call:
    the ``reference`` of each checker a check cell calls on a :class:`Remote`, and any library
    function with the exercise's own name."""
    found: dict[str, str] = {}
    for node in ast.walk(ast.parse(check_source)):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        first = node.args[0]
        if not isinstance(first, ast.Name) or not isinstance(namespace.get(first.id), Remote):
            continue
        check: Any = None
        if isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
            check = getattr(namespace.get(node.func.value.id), node.func.attr, None)
        elif isinstance(node.func, ast.Name):
            check = namespace.get(node.func.id)
        reference = getattr(check, "reference", None)
        module_name = getattr(reference, "__module__", None) or ""
        if module_name.startswith("ssast_teach.") and not module_name.startswith(
            "ssast_teach.exercises"
        ):
            found[f"{module_name}.{reference.__name__}"] = first.id
        for info in pkgutil.iter_modules(ssast_teach.__path__, "ssast_teach."):
            if callable(getattr(sys.modules.get(info.name), first.id, None)):
                found[f"{info.name}.{first.id}"] = first.id
    return found
