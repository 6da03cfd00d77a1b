"""The error tree: every class documented, leaves for usage and device errors, several
models' problems raised as one error of each child's class."""

from __future__ import annotations

import inspect

import pytest
import torch

import alloy.errors as errors
from alloy.devices import check_count, check_device
from alloy.errors import (
    AlloyError,
    CheckpointError,
    DeviceError,
    ModelNotFoundError,
    ModelRefSyntaxError,
    UsageError,
    several,
)


def test_every_error_class_is_in_the_tree_with_a_docstring() -> None:
    classes = [
        c
        for _, c in inspect.getmembers(errors, inspect.isclass)
        if issubclass(c, Exception) and c.__module__ == errors.__name__
    ]
    assert len(classes) >= 14
    for c in classes:
        assert issubclass(c, AlloyError), c
        assert c.__doc__ and c.__doc__.strip(), c
        assert c.__name__ in errors.__doc__, f"draw {c.__name__} in the tree of errors.py"
    assert issubclass(ModelRefSyntaxError, UsageError)


def test_one_problem_is_raised_as_it_is() -> None:
    e = ModelNotFoundError("model x does not exist")
    assert several([e]) is e


def test_several_problems_of_one_kind_keep_it() -> None:
    a, b = ModelNotFoundError("x does not exist"), ModelNotFoundError("y does not exist")
    e = several([a, b])
    assert type(e) is ModelNotFoundError
    assert str(e) == "- x does not exist\n- y does not exist"
    assert e.errors == [a, b] and e.__cause__ is a  # type: ignore[attr-defined]


def test_several_problems_of_two_kinds_are_caught_as_either() -> None:
    a, b = ModelNotFoundError("x does not exist"), CheckpointError("y is truncated")
    e = several([a, b])
    assert isinstance(e, ModelNotFoundError) and isinstance(e, CheckpointError)
    assert "x does not exist" in str(e) and "y is truncated" in str(e)
    with pytest.raises(CheckpointError):
        raise e
    assert type(several([b, a])) is not type(e)  # the first problem's class comes first
    assert type(several([a, b])) is type(e)  # one class per combination


def test_devices() -> None:
    assert check_device("cpu") == "cpu"
    with pytest.raises(DeviceError, match=r"unknown device 'tpu' \(`--device`\)"):
        check_device("tpu")
    with pytest.raises(DeviceError, match="cuda, cuda:N"):
        check_device("cuda:x")
    if torch.cuda.device_count() < 8:
        with pytest.raises(DeviceError, match="'cuda:7'"):
            check_device("cuda:7")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA device"):
            check_device("cuda")


def test_counts() -> None:
    assert check_count(None, "workers", "--workers") is None
    assert check_count(3, "workers", "--workers") == 3
    for bad in (0, -2):
        with pytest.raises(
            UsageError, match=rf"workers \(`--workers`\) must be at least 1, got {bad}"
        ):
            check_count(bad, "workers", "--workers")


def test_the_root_is_never_raised_itself() -> None:
    import ast
    from pathlib import Path

    src = Path(errors.__file__).parent
    raised = [
        f"{p.relative_to(src)}:{node.lineno}"
        for p in sorted(src.rglob("*.py"))
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
        if isinstance(node, ast.Raise)
        and isinstance(node.exc, ast.Call)
        and isinstance(node.exc.func, ast.Name)
        and node.exc.func.id == "AlloyError"
    ]
    assert raised == []
