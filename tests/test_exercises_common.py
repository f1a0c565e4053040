"""The behaviour shared by every checker (ssast_teach.exercises): a stub is reported and the
chapter goes on outside grading, fails under grading; hidden cases follow the grader's seed."""

import pytest

from ssast_teach.exercises import (
    GRADER_SEED_ENV,
    ExerciseError,
    NotImplementedYet,
    call_student,
    checker,
    hidden_seed,
)


def library_square(x):
    return x * x


def stub(x):
    raise NotImplementedError()


@checker(reference=library_square)
def check_square(fn, hidden=False):
    if call_student(fn, 3, case="x=3") != 9:
        raise ExerciseError("square(3) should be 9")


@checker()
def check_extension(fn, hidden=False):
    call_student(fn, 3, case="x=3")


def test_a_stub_is_reported_and_the_chapter_goes_on_with_the_library(capsys):
    assert check_square(stub) is library_square
    out = capsys.readouterr().out
    assert "stub is not implemented yet" in out and "goes on with the library's version" in out


def test_a_right_answer_is_kept_and_an_extension_check_returns_nothing(capsys):
    def mine(x):
        return x**2

    assert check_square(mine) is mine
    assert check_extension(mine) is None
    assert check_extension(stub) is None
    assert "not implemented yet" in capsys.readouterr().out


def test_a_wrong_answer_raises_outside_grading_too():
    with pytest.raises(ExerciseError, match="should be 9"):
        check_square(lambda x: x + 1)


def test_under_grading_a_stub_raises(grading):
    with pytest.raises(NotImplementedYet, match="not implemented yet"):
        check_square(stub)
    with pytest.raises(NotImplementedYet):
        check_extension(stub)


def test_hidden_cases_fail_a_stub_even_outside_grading():
    with pytest.raises(NotImplementedYet):
        check_square(stub, hidden=True)


def test_hidden_seed_comes_from_the_grader(monkeypatch):
    monkeypatch.delenv(GRADER_SEED_ENV, raising=False)
    assert hidden_seed(7) == 7
    monkeypatch.setenv(GRADER_SEED_ENV, "123")
    assert hidden_seed(7) == 123
    monkeypatch.setenv(GRADER_SEED_ENV, "abc")
    with pytest.raises(ValueError, match=GRADER_SEED_ENV):
        hidden_seed(7)


def test_reveal_prints_the_answer_beside_the_prediction(capsys):
    from ssast_teach.exercises import reveal

    assert reveal(3, None) is None
    assert reveal(3, 3) is True
    assert reveal(3.01, 3, agrees=lambda p, a: abs(p - a) < 0.1) is True
    assert reveal("low", "high") is False
    out = capsys.readouterr().out
    assert "no prediction recorded" in out and "answer: low" in out and "not this time" in out
