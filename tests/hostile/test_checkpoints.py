"""Hostile checkpoints: safetensors headers and sharded indexes validated exactly as the format
requires, paths kept inside the model directory, regular files only; each a typed error that
names the file (and the tensor), exit 1, nothing written."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .harness import Case, Scene, Table, run_case, safetensors_bytes

cases = Table()
W = "model.safetensors"


def _f32(name: str, shape: list[int], begin: int) -> dict[str, Any]:
    n = 4
    for d in shape:
        n *= d
    return {name: {"dtype": "F32", "shape": shape, "data_offsets": [begin, begin + n]}}


def _bad_weights(header: Any, data: bytes = b"", **kw: Any) -> Callable[[Scene], None]:
    def write(s: Scene) -> None:
        (s.b / W).write_bytes(safetensors_bytes(header, data, **kw))

    return write


def _weights_case(name: str, write: Callable[[Scene], None], *says: str) -> None:
    def setup(s: Scene) -> Case:
        write(s)
        return Case(s.merge_args(), 1, [str(s.b / W), *says])

    setup.__name__ = name
    cases(setup)


GOOD = {**_f32("x", [2], 0), **_f32("y", [3], 8)}
DATA = b"\0" * 20
T = "'x'"  # how a message names the tensor x

for name, header, data, says in [
    ("header_is_a_list", [1, 2], b"", ["JSON object"]),
    ("header_is_null", None, b"", ["JSON object"]),
    ("header_is_a_number", 7, b"", ["JSON object"]),
    ("header_is_a_string", "x", b"", ["JSON object"]),
    ("entry_is_a_list", {"x": [1]}, b"", [T]),
    ("entry_is_null", {"x": None}, b"", [T]),
    ("entry_without_dtype", {"x": {"shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, [T, "dtype"]),
    (
        "entry_without_shape",
        {"x": {"dtype": "F32", "data_offsets": [0, 4]}},
        b"\0" * 4,
        [T, "shape"],
    ),
    (
        "entry_without_offsets",
        {"x": {"dtype": "F32", "shape": [1]}},
        b"\0" * 4,
        [T, "data_offsets"],
    ),
    (
        "unknown_dtype",
        {"x": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}},
        b"\0" * 16,
        [T, "F128"],
    ),
    (
        "dtype_not_a_string",
        {"x": {"dtype": 4, "shape": [1], "data_offsets": [0, 4]}},
        b"\0" * 4,
        [T],
    ),
    (
        "negative_shape",
        {"x": {"dtype": "F32", "shape": [-1, -4], "data_offsets": [0, 16]}},
        b"\0" * 16,
        [T, "shape"],
    ),
    (
        "float_shape",
        {"x": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}},
        b"\0" * 4,
        [T, "shape"],
    ),
    (
        "bool_shape",
        {"x": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}},
        b"\0" * 4,
        [T, "shape"],
    ),
    (
        "string_shape",
        {"x": {"dtype": "F32", "shape": "4", "data_offsets": [0, 4]}},
        b"\0" * 4,
        [T, "shape"],
    ),
    (
        "shape_of_lists",
        {"x": {"dtype": "F32", "shape": [[1]], "data_offsets": [0, 4]}},
        b"\0" * 4,
        [T, "shape"],
    ),
    (
        "negative_offsets",
        {"x": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}},
        b"\0" * 4,
        [T, "data_offsets"],
    ),
    (
        "reversed_offsets",
        {"x": {"dtype": "F32", "shape": [0], "data_offsets": [4, 0]}},
        b"\0" * 4,
        [T, "data_offsets"],
    ),
    (
        "three_offsets",
        {"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}},
        b"\0" * 8,
        [T],
    ),
    (
        "float_offsets",
        {"x": {"dtype": "F32", "shape": [1], "data_offsets": [0.0, 4.0]}},
        b"\0" * 4,
        [T],
    ),
    (
        "bool_offsets",
        {"x": {"dtype": "U8", "shape": [1], "data_offsets": [False, True]}},
        b"\0",
        [T],
    ),
    (
        "string_offsets",
        {"x": {"dtype": "F32", "shape": [1], "data_offsets": "0,4"}},
        b"\0" * 4,
        [T],
    ),
    (
        "byte_length_not_dtype_times_shape",
        {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}},
        b"\0" * 4,
        [T, "8 bytes"],
    ),
    ("overlapping_offsets", {**_f32("x", [2], 0), **_f32("y", [2], 4)}, b"\0" * 12, ["overlaps"]),
    ("both_at_zero", {**_f32("x", [2], 0), **_f32("y", [2], 0)}, b"\0" * 8, ["overlaps"]),
    ("gap_between_tensors", {**_f32("x", [1], 0), **_f32("y", [1], 8)}, b"\0" * 12, ["gap"]),
    ("first_tensor_not_at_zero", _f32("x", [1], 4), b"\0" * 8, [T, "gap"]),
    ("data_past_end_of_file", GOOD, b"\0" * 12, ["truncated"]),
    ("bytes_after_last_tensor", GOOD, DATA + b"\0" * 4, ["after the last tensor"]),
    ("metadata_not_an_object", {"__metadata__": [1], **GOOD}, DATA, ["__metadata__"]),
    ("metadata_with_number_value", {"__metadata__": {"format": 1}, **GOOD}, DATA, ["__metadata__"]),
    (
        "header_with_nan",
        b'{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, NaN]}}',
        b"\0" * 4,
        ["NaN"],
    ),
    ("header_not_utf8", b'{"\xff\xfe": 1}', b"", ["UTF-8"]),
    ("header_not_json", b"{not json at all}", b"", ["not valid JSON"]),
    ("header_deeply_nested", b"[" * 100_000 + b"]" * 100_000, b"", ["corrupt"]),
    (
        "header_nested_in_entry",
        {
            "x": {
                "dtype": "F32",
                "shape": [1],
                "data_offsets": [0, 4],
                "z": json.loads("[" * 500 + "]" * 500),
            }
        },
        b"\0" * 4,
        [T, "unknown keys"],
    ),
    (
        "tensor_named_twice",
        b'{"x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "x": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}',
        b"\0\0",
        ["twice", T],
    ),
]:
    _weights_case(name, _bad_weights(header, data), *says)


_weights_case("header_length_past_end", _bad_weights(GOOD, DATA, length=10_000), "truncated")
_weights_case("header_length_huge", _bad_weights(GOOD, DATA, length=2**63), "truncated")
_weights_case("header_length_zero", _bad_weights(b"", DATA, length=0), "corrupt")


@cases
def file_shorter_than_length_field(s: Scene) -> Case:
    (s.b / W).write_bytes(b"\x01\x02")
    return Case(s.merge_args(), 1, [str(s.b / W), "truncated"])


@cases
def empty_weights_file(s: Scene) -> Case:
    (s.b / W).write_bytes(b"")
    return Case(s.merge_args(), 1, [str(s.b / W)])


@cases
def weights_are_a_fifo(s: Scene) -> Case:
    (s.b / W).unlink()
    os.mkfifo(s.b / W)
    return Case(s.merge_args(), 1, [str(s.b / W), "FIFO"])


@cases
def weights_are_a_directory(s: Scene) -> Case:
    (s.b / W).unlink()
    (s.b / W).mkdir()
    return Case(s.merge_args(), 1, [str(s.b / W), "directory"])


@cases
def weights_are_a_dangling_link(s: Scene) -> Case:
    (s.b / W).unlink()
    (s.b / W).symlink_to(s.root / "gone.safetensors")
    return Case(s.merge_args(), 1, [str(s.b / W)])


@cases
def weights_are_a_char_device(s: Scene) -> Case:
    (s.b / W).unlink()
    (s.b / W).symlink_to("/dev/zero")
    return Case(s.merge_args(), 1, [str(s.b / W), "device"])


@cases
def other_safetensors_is_a_fifo(s: Scene) -> Case:
    (s.b / W).unlink()
    os.mkfifo(s.b / "weights.safetensors")
    return Case(s.merge_args(), 1, [str(s.b / "weights.safetensors"), "FIFO"])


@cases
def torch_bin_is_a_fifo(s: Scene) -> Case:
    (s.b / W).unlink()
    os.mkfifo(s.b / "pytorch_model.bin")
    return Case(s.merge_args(), 1, [str(s.b / "pytorch_model.bin"), "FIFO"])


@cases
def config_json_is_a_fifo_check(s: Scene) -> Case:
    (s.b / W).unlink()
    os.mkfifo(s.b / W)
    return Case(["check", str(s.a), str(s.b)], 2, [str(s.b / W), "FIFO"])


# --- sharded indexes ---------------------------------------------------------------------

INDEX = "model.safetensors.index.json"


def _shard(s: Scene) -> None:
    """Turn b's weights into one shard under an index."""
    os.rename(s.b / W, s.b / "model-00001-of-00001.safetensors")


def _index_case(name: str, index: Any, *says: str, raw: bytes | None = None) -> None:
    def setup(s: Scene) -> Case:
        _shard(s)
        text = raw if raw is not None else json.dumps(index).encode()
        (s.b / INDEX).write_bytes(text)
        return Case(s.merge_args(), 1, [str(s.b / INDEX), *says])

    setup.__name__ = name
    cases(setup)


SHARD = "model-00001-of-00001.safetensors"
N = "model.norm.weight"
for name, index, says in [
    ("weight_map_is_a_list", {"weight_map": [N, SHARD]}, ["weight_map", "list"]),
    ("weight_map_is_a_string", {"weight_map": SHARD}, ["weight_map"]),
    ("weight_map_is_null", {"weight_map": None}, ["weight_map"]),
    ("weight_map_missing", {"metadata": {}}, ["weight_map"]),
    ("index_is_a_list", [N], ["JSON object"]),
    ("shard_name_is_a_number", {"weight_map": {N: 1}}, [repr(N)]),
    ("shard_name_is_null", {"weight_map": {N: None}}, [repr(N)]),
    ("shard_name_is_a_list", {"weight_map": {N: [SHARD]}}, [repr(N)]),
    ("shard_name_empty", {"weight_map": {N: ""}}, [repr(N)]),
    (
        "shard_path_leaves_dir",
        {"weight_map": {N: "../a/model.safetensors"}},
        ["leaves the model directory", repr(N)],
    ),
    (
        "shard_path_deeper_escape",
        {"weight_map": {N: "sub/../../a/model.safetensors"}},
        ["leaves the model directory"],
    ),
    ("shard_path_absolute", {"weight_map": {N: "/etc/passwd"}}, ["leaves the model directory"]),
    (
        "shard_path_backslash_escape",
        {"weight_map": {N: "..\\a\\model.safetensors"}},
        ["leaves the model directory"],
    ),
    ("shard_missing", {"weight_map": {N: "model-00002-of-00002.safetensors"}}, ["missing"]),
    ("shard_lacks_the_tensor", {"weight_map": {"not.in.shard": SHARD}}, ["not.in.shard"]),
]:
    _index_case(name, index, *says)

_index_case(
    "tensor_mapped_to_two_shards",
    None,
    "twice",
    N,
    raw=f'{{"weight_map": {{"{N}": "{SHARD}", "{N}": "other.safetensors"}}}}'.encode(),
)
_index_case("index_not_json", None, "not valid JSON", raw=b"{weight_map")
_index_case("index_not_utf8", None, "UTF-8", raw=b'{"weight_map": {"\xff": "x"}}')
_index_case("index_deeply_nested", None, "corrupt", raw=b"[" * 100_000 + b"]" * 100_000)


@cases
def index_is_a_fifo(s: Scene) -> Case:
    _shard(s)
    os.mkfifo(s.b / INDEX)
    return Case(s.merge_args(), 1, [str(s.b / INDEX), "FIFO"])


@cases
def shard_is_a_fifo(s: Scene) -> Case:
    _shard(s)
    os.mkfifo(s.b / "model-00002-of-00002.safetensors")
    index = {"weight_map": {N: "model-00002-of-00002.safetensors"}}
    (s.b / INDEX).write_text(json.dumps(index))
    return Case(s.merge_args(), 1, ["model-00002-of-00002.safetensors", "FIFO"])


@cases
def shard_is_a_fifo_check(s: Scene) -> Case:
    shard_is_a_fifo(s)
    return Case(["check", str(s.a), str(s.b)], 2, ["model-00002-of-00002.safetensors", "FIFO"])


@cases
def shard_is_a_directory(s: Scene) -> Case:
    _shard(s)
    (s.b / "dir.safetensors").mkdir()
    (s.b / INDEX).write_text(json.dumps({"weight_map": {N: "dir.safetensors"}}))
    return Case(s.merge_args(), 1, ["dir.safetensors", "directory"])


# --- the files beside the weights ----------------------------------------------------------


def _aux_case(name: str, fname: str, data: bytes, code: int, *says: str) -> None:
    def setup(s: Scene) -> Case:
        (s.a / fname).write_bytes(data)
        return Case(s.merge_args(), code, [str(s.a / fname), *says] if code else list(says))

    setup.__name__ = "aux_" + name
    cases(setup)


for name, fname, data, code, says in [
    ("config_a_list", "config.json", b"[1]", 1, ["JSON object"]),
    ("config_not_json", "config.json", b"{bad", 1, ["not valid JSON"]),
    ("config_not_utf8", "config.json", b'{"model_type": "\xff"}', 1, ["UTF-8"]),
    ("config_deeply_nested", "config.json", b"[" * 100_000 + b"]" * 100_000, 1, ["corrupt"]),
    ("tokenizer_config_a_list", "tokenizer_config.json", b"[1]", 1, ["JSON object"]),
    ("tokenizer_config_not_json", "tokenizer_config.json", b"{bad", 1, []),
    ("tokenizer_config_not_utf8", "tokenizer_config.json", b'{"chat_template": "\xff"}', 1, []),
    ("tokenizer_json_a_list", "tokenizer.json", b"[]", 1, ["JSON object"]),
    ("tokenizer_json_not_json", "tokenizer.json", b"{bad", 1, []),
    ("special_tokens_not_json", "special_tokens_map.json", b"{bad", 1, []),
    ("chat_template_not_utf8", "chat_template.jinja", b"\xff\xfe", 1, ["utf-8"]),
    (
        "generation_config_corrupt_is_copied",
        "generation_config.json",
        b"{bad",
        0,
        ["merged with linear"],
    ),
    (
        "model_card_binary_is_ignored",
        "README.md",
        b"---\n\xff: [\n---\n",
        0,
        ["merged with linear"],
    ),
]:
    _aux_case(name, fname, data, code, *says)


@pytest.mark.parametrize("setup", cases.params())
def test_checkpoint_case(tmp_path: Path, setup: object) -> None:
    run_case(Scene(tmp_path), setup)  # type: ignore[arg-type]
