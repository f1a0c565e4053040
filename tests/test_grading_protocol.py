"""What crosses from a submission's process to the grader (``ssast_teach.grading``), without
starting one: the worker's encoding, the grader's checks on what it receives, the names a
check cell binds, and the static reading that lists code for review."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from ssast_teach import grading
from ssast_teach.grading import GradingError, GradingSession, Remote, _Decoder, _encode, _leaves
from ssast_teach.model import SSASTModel


@pytest.fixture
def session() -> GradingSession:
    return GradingSession([], scale="ci", timeout=5)


def roundtrip(value, session, args=(), kwargs=None):
    """``value`` encoded as the worker does and rebuilt as the grader does."""
    from safetensors.torch import save

    kwargs = kwargs or {}
    tensors: dict = {}
    refs = {id(obj): path for path, obj in _leaves(args, kwargs).items()}
    data = _encode(value, tensors, refs)
    return _Decoder(session, save(tensors) if tensors else b"", _leaves(args, kwargs)).value(data)


def decode(data, session, blob=b""):
    return _Decoder(session, blob, {}).value(data)


def test_plain_values_come_back_with_their_types(session):
    value = {"a": [1, 2.5, float("nan"), True, None], 3: (torch.Size([2, 3]), torch.float16),
             "s": {1, 2}, "t": torch.arange(6).view(2, 3)}  # fmt: skip
    back = roundtrip(value, session)
    assert type(back["a"]) is list and back["a"][1] == 2.5 and back["a"][2] != back["a"][2]
    assert back[3] == (torch.Size([2, 3]), torch.float16) and back["s"] == {1, 2}
    assert type(back["t"]) is torch.Tensor and torch.equal(back["t"], value["t"])


def test_a_tensor_subclass_comes_back_as_a_plain_tensor(session):
    class Always(torch.Tensor):
        def __eq__(self, other):
            return True

    back = roundtrip(torch.zeros(3).as_subclass(Always), session)
    assert type(back) is torch.Tensor


def test_an_object_of_the_students_comes_back_as_a_handle_that_equals_only_itself(session):
    class Yes:
        def __eq__(self, other):
            return True

    back = roundtrip(Yes(), session)
    assert isinstance(back, Remote) and back != [1, 2] and not back == 0  # noqa: SIM201


def test_a_library_model_is_rebuilt_from_its_class(session):
    model = SSASTModel.for_pretraining("mini", 16, 16, 128, 64)
    back = roundtrip(model, session)
    assert type(back) is SSASTModel and back.config == model.config
    assert type(back.v) is type(model.v)
    ours, theirs = model.state_dict(), back.state_dict()
    assert list(ours) == list(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_references_and_in_place_changes_reach_the_graders_arguments(session):
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    args = (model, torch.zeros(3), random.Random(1))
    back = roundtrip([model[1].weight], session, args)
    assert back[0] is model[1].weight
    new_state = random.Random(2).getstate()
    change = [
        [["a", 1], {"t": "tensor", "k": "0", "rg": False}],
        [["a", 2], _encode(new_state, {}, {})],
        [["a", 0, "m:0"], _encode((False, {"weight": False, "bias": True}), {}, {})],
    ]
    from safetensors.torch import save

    decoder = _Decoder(session, save({"0": torch.ones(3)}), _leaves(args, {}))
    decoder.apply(change)
    assert torch.equal(args[1], torch.ones(3)) and args[2].getstate() == new_state
    assert not model[0].training and not model[0].weight.requires_grad


@pytest.mark.parametrize(
    "data, blob_tensors",
    [
        ({"t": "pickle", "v": "gASV"}, None),  # no pickle is ever read
        ({"t": "module", "cls": "os:system", "attrs": {}, "children": {}, "params": {},
          "buffers": {}, "training": True}, None),  # fmt: skip
        ({"t": "dataclass", "cls": "builtins:eval", "v": {}}, None),
        ({"t": "module", "cls": "torch.nn.modules.linear:Linear", "attrs": {
            "forward": {"t": "handle", "id": 0}}, "children": {}, "params": {}, "buffers": {},
          "training": True}, None),  # a library module whose forward would be the student's
        ({"t": "tensor", "k": "9"}, {"0": torch.zeros(1)}),
        ({"t": "ref", "path": ["a", 0]}, None),
        ({"t": "float", "v": "__import__('os')"}, None),
        ({"t": "dtype", "v": "nn"}, None),
        ({"t": "list", "v": "not a list"}, None),
        ([1, 2], None),  # an untagged list
    ],
)
def test_malformed_answers_are_refused(session, data, blob_tensors):
    from safetensors.torch import save

    with pytest.raises(GradingError):
        decode(data, session, save(blob_tensors) if blob_tensors else b"")


def test_an_in_place_change_of_the_wrong_shape_is_refused(session):
    from safetensors.torch import save

    args = (torch.zeros(3),)
    decoder = _Decoder(session, save({"0": torch.ones(4)}), _leaves(args, {}))
    with pytest.raises(GradingError):
        decoder.apply([[["a", 0], {"t": "tensor", "k": "0", "rg": False}]])


def test_check_cells_bind_the_submissions_names_and_only_modules_and_checkers(session):
    imports = grading.notebook_imports([
        "import torch\nfrom ssast_teach.masking import random_mask\n"
        "from ssast_teach.exercises import ch03, call_student"
    ])  # fmt: skip
    source = "import math\nrandom_mask = ch03.check_random_mask(random_mask)\ncall_student(torch)"
    names = grading.free_names(source)
    assert names == {"random_mask", "ch03", "call_student", "torch"}
    session.bind(names, imports)
    assert isinstance(session.namespace["random_mask"], Remote)  # never the library's
    assert session.namespace["ch03"].__name__ == "ssast_teach.exercises.ch03"
    assert session.namespace["torch"] is torch
    from ssast_teach.exercises import call_student

    assert session.namespace["call_student"] is call_student


def test_the_library_reference_of_a_check_is_known(session):
    grading.load_library({"ch03": ("ssast_teach.exercises", "ch03")})
    session.bind({"ch03", "random_mask"}, {"ch03": ("ssast_teach.exercises", "ch03")})
    found = grading.library_references("ch03.check_random_mask(random_mask)", session.namespace)
    assert found == {"ssast_teach.masking.random_mask": "random_mask"}


@pytest.mark.parametrize(
    "source, name",
    [
        ("from ssast_teach.masking import random_mask as rm\ndef f(): return rm(1, 2, 3)",
         "ssast_teach.masking.random_mask"),
        ("import ssast_teach\ndef f(): return ssast_teach.masking.random_mask(1, 2, 3)",
         "ssast_teach.masking.random_mask"),
        ("import sys\nsys.modules['x'].check = print", "sys.modules"),
        ("get_ipython().set_custom_exc((Exception,), None)", "set_custom_exc"),
        ("import os\nseed = os.environ['X']", "os.environ"),
        ("from os import getenv", "os.getenv"),
        ("import sys\nsys.excepthook = print", "sys.excepthook"),
        ("x = getattr(__import__('os'), 'environ')", "__import__"),
        ("from ssast_teach import exercises", "ssast_teach.exercises"),
        ("%env SSAST_TEACH_GRADER_SEED", "SSAST_TEACH_GRADER_SEED"),
    ],
)
def test_code_a_grader_should_read_is_listed(source, name):
    found = dict(grading.for_review(source, {"ssast_teach.masking.random_mask": "random_mask"}))
    assert name in found, found


def test_ordinary_code_is_not_listed():
    source = ("import torch\nimport random\n\ndef random_mask(b, n, m, generator=None):\n"
              "    model.eval()\n    return torch.rand(b, n, generator=generator).argsort(1)[:, :m]")  # fmt: skip
    assert grading.for_review(source, {"ssast_teach.masking.random_mask": "random_mask"}) == []
