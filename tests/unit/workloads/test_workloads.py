"""Workloads: determinism, exact token accounting, vLLM-compatible semantics, user errors."""

from __future__ import annotations

import json
import math
import os
import random
import warnings
from pathlib import Path
from typing import Sequence

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from infermeter.errors import FieldError, UserError
from infermeter.workloads import (
    JsonlSpec,
    Prompt,
    PromptList,
    RandomSpec,
    ShareGPTSpec,
    SonnetSpec,
    setting,
    load_tokenizer,
    make_prompts,
    parse_spec,
)
from infermeter.workloads.sonnet import INSTRUCTION, sonnet_lines

TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@pytest.fixture(scope="module")
def tok_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A byte-level BPE (vocab 2000) trained on the sonnets plus generated text; with and without template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    text = "".join(sonnet_lines())
    rnd = random.Random(0)
    words = text.split()
    extra = [" ".join(rnd.choice(words) for _ in range(25)) + f" {rnd.randint(0, 10**6)}." for _ in range(400)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(sonnet_lines()) + extra, trainer)
    root = tmp_path_factory.mktemp("tok")
    with_template, plain = root / "chat", root / "plain"
    for folder in (with_template, plain):
        folder.mkdir()
        tok.save(str(folder / "tokenizer.json"))
    (with_template / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": TEMPLATE, "eos_token": "<|im_end|>"}), encoding="utf-8")
    return with_template, plain


@pytest.fixture(scope="module")
def tok(tok_dirs):
    return load_tokenizer(tok_dirs[0])


@pytest.fixture(scope="module")
def plain_tok(tok_dirs):
    return load_tokenizer(tok_dirs[1])


def user(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def n_tokens(tok, text: str) -> int:
    return len(tok.encode(text))


def template_overhead(tok) -> int:
    probe = "Shall I compare thee to a summer's day?"
    return n_tokens(tok, tok.chat_prompt(user(probe))) - n_tokens(tok, probe)


# --------------------------------------------------------------------------- specs


def test_spec_defaults_are_vllm_bench_serve_defaults():
    assert (SonnetSpec().input_len, SonnetSpec().output_len, SonnetSpec().prefix_len) == (550, 150, 200)
    r = RandomSpec()
    assert (r.input_len, r.output_len, r.range_ratio, r.prefix_len) == (1024, 128, 0.0, 0)
    assert ShareGPTSpec(path="x.json").output_len is None
    assert JsonlSpec(path="x.jsonl").output_len is None


def test_parse_spec_dispatches_on_name_and_forbids_extra_keys():
    assert isinstance(parse_spec({"name": "sonnet"}), SonnetSpec)
    assert isinstance(parse_spec({"name": "random", "input_len": 8}), RandomSpec)
    assert parse_spec({"name": "sharegpt", "path": "a.json"}).path == Path("a.json")
    assert isinstance(parse_spec({"name": "jsonl", "path": "a.jsonl"}), JsonlSpec)
    with pytest.raises(ValidationError):
        RandomSpec(input_len=8, bogus=1)
    with pytest.raises(UserError, match="bogus"):
        parse_spec({"name": "random", "bogus": 1})
    with pytest.raises(UserError):
        parse_spec({"name": "nope"})


def test_setting_names():
    assert setting("sonnet", "prefix_len") == "workload.sonnet_prefix_len"
    assert setting("random", "range_ratio") == "workload.random_range_ratio"
    assert setting("jsonl", "path") == "workload.dataset_path"
    assert setting("shared-prefix", "groups") == "workload.prefix_groups"


@pytest.mark.parametrize(("build", "message"), [
    (lambda: SonnetSpec(input_len=200, prefix_len=300),
     "--sonnet-prefix-len 300 is larger than --sonnet-input-len 200"),
    (lambda: SonnetSpec(output_len=0), "--sonnet-output-len 0 must be at least 1"),
    (lambda: SonnetSpec(input_len=0, prefix_len=0), "--sonnet-input-len 0 must be at least 1"),
    (lambda: SonnetSpec(prefix_len=-1), "--sonnet-prefix-len -1 must be at least 0"),
    (lambda: RandomSpec(range_ratio=1.0), "--random-range-ratio 1.0 is outside [0, 1)"),
    (lambda: RandomSpec(range_ratio=-0.1), "--random-range-ratio -0.1"),
    (lambda: RandomSpec(output_len=0), "--random-output-len 0"),
    (lambda: RandomSpec(input_len=-5), "--random-input-len -5"),
    (lambda: RandomSpec(prefix_len=-1), "--random-prefix-len -1"),
    (lambda: RandomSpec(input_len=0), "can make an empty prompt"),
    (lambda: RandomSpec(input_len=1, range_ratio=0.5), "can make an empty prompt"),
    (lambda: ShareGPTSpec(path="a", output_len=0), "--sharegpt-output-len 0"),
    (lambda: JsonlSpec(path="a", output_len=-2), "--sharegpt-output-len -2"),
])
def test_bad_spec_values_name_the_setting_and_the_cli_its_flag(build, message):
    from infermeter.cli.options import worded_for_cli

    with pytest.raises(FieldError) as info:
        build()
    assert info.value.field.startswith("workload.") and "--" not in str(info.value)
    assert message in str(worded_for_cli(info.value))
    assert info.value.fix and "\n" not in str(info.value)


def test_prefix_only_random_prompt_is_allowed():
    assert RandomSpec(input_len=0, prefix_len=4).prefix_len == 4


@pytest.mark.parametrize(("num", "seed", "message"), [
    (0, 0, "--num-prompts 0"), (-3, 0, "--num-prompts -3"), (2, -1, "--seed -1"),
])
def test_bad_count_or_seed(tok, num, seed, message):
    from infermeter.cli.options import worded_for_cli

    with pytest.raises(FieldError) as info:
        make_prompts(RandomSpec(input_len=8), tok, num, seed, False)
    assert info.value.field in ("load.num_prompts", "load.seed") and message in str(worded_for_cli(info.value))


def test_make_prompts_accepts_a_mapping(tok):
    out = make_prompts({"name": "random", "input_len": 12, "output_len": 3}, tok, 2, 0, False)
    assert isinstance(out, PromptList) and [p.input_len for p in out] == [12, 12]
    assert all(isinstance(p, Prompt) and p.output_len == 3 for p in out)


# --------------------------------------------------------------------------- tokenizer extensions


def test_tokenizer_batch_helpers_agree_with_single_calls(tok):
    texts = ["FROM fairest creatures", "", "thy <|im_end|> beauty"]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]
    assert tok.count_batch(texts) == [len(tok.encode(t)) for t in texts]
    ids = [tok.encode(t) for t in texts]
    assert tok.decode_batch(ids) == [tok.decode(i) for i in ids]
    special = tok.special_ids()
    assert {tok.encode(s)[0] for s in SPECIALS} == set(special)
    rendered = tok.chat_prompt(user("hi"))
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.chat_prompt(user("hi")) == rendered  # second call: cached compiled template


# --------------------------------------------------------------------------- random


def test_random_prompts_reencode_to_exactly_input_len(tok):
    spec = RandomSpec(input_len=300, output_len=20)
    out = make_prompts(spec, tok, 40, 1, False)
    assert len(out) == 40 and out.notes == []
    assert tok.count_batch([p.text for p in out]) == [300] * 40
    assert {p.input_len for p in out} == {300} and {p.output_len for p in out} == {20}
    assert all(p.messages is None for p in out)
    assert not any(s in p.text for p in out for s in SPECIALS)
    assert len({p.text for p in out}) == 40


def test_random_range_ratio_bounds(tok):
    spec = RandomSpec(input_len=101, output_len=11, range_ratio=0.5)
    out = make_prompts(spec, tok, 80, 3, False)
    ins = [p.input_len for p in out]
    outs = [p.output_len for p in out]
    assert all(50 <= n <= 152 for n in ins) and len(set(ins)) > 10
    assert all(5 <= n <= 17 for n in outs) and len(set(outs)) > 3
    assert [n_tokens(tok, p.text) for p in out] == ins


def test_random_output_len_never_below_one(tok):
    out = make_prompts(RandomSpec(input_len=10, output_len=1, range_ratio=0.9), tok, 30, 0, False)
    assert min(p.output_len for p in out) == 1 and max(p.output_len for p in out) <= 2


def test_random_shared_prefix_is_added_on_top(tok):
    spec = RandomSpec(input_len=50, output_len=4, prefix_len=30)
    out = make_prompts(spec, tok, 12, 5, False)
    assert {p.input_len for p in out} == {80}
    assert [n_tokens(tok, p.text) for p in out] == [80] * 12
    common = os.path.commonprefix([p.text for p in out])
    assert n_tokens(tok, common) >= 29  # the whole prefix (its last token may merge with what follows)
    other = make_prompts(spec, tok, 3, 6, False)
    assert os.path.commonprefix([out[0].text, other[0].text]) != out[0].text[:len(common)]


def test_random_is_deterministic_per_seed_and_stable_in_num_prompts(tok):
    spec = RandomSpec(input_len=64, range_ratio=0.3, prefix_len=5)
    a = make_prompts(spec, tok, 10, 7, False)
    assert list(a) == list(make_prompts(spec, tok, 10, 7, False))
    assert list(make_prompts(spec, tok, 4, 7, False)) == list(a[:4])
    b = make_prompts(spec, tok, 10, 8, False)
    assert [p.text for p in a] != [p.text for p in b]


def test_random_chat_counts_the_template(tok):
    spec = RandomSpec(input_len=120, output_len=9)
    plain = make_prompts(spec, tok, 10, 2, False)
    chat = make_prompts(spec, tok, 10, 2, True)
    overhead = template_overhead(tok)
    assert overhead > 0
    assert [c.input_len - p.input_len for c, p in zip(chat, plain)] == [overhead] * 10
    for c, p in zip(chat, plain):
        assert c.text == p.text and c.messages == tuple(user(p.text))
        assert c.input_len == n_tokens(tok, tok.chat_prompt(list(c.messages)))


def test_random_chat_without_template_counts_raw_text_and_says_so(plain_tok):
    out = make_prompts(RandomSpec(input_len=40), plain_tok, 3, 0, True)
    assert [p.input_len for p in out] == [40] * 3
    assert any("no chat template" in n for n in out.notes)
    assert out[0].messages == tuple(user(out[0].text))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(input_len=st.integers(1, 260), ratio=st.sampled_from([0.0, 0.1, 0.5, 0.9]),
       prefix=st.integers(0, 40), seed=st.integers(0, 2**32))
def test_random_lengths_property(tok, input_len, ratio, prefix, seed):
    lo, hi = math.floor(input_len * (1 - ratio) + 1e-9), math.ceil(input_len * (1 + ratio) - 1e-9)
    assume(prefix + lo >= 1)
    spec = RandomSpec(input_len=input_len, output_len=7, range_ratio=ratio, prefix_len=prefix)
    out = make_prompts(spec, tok, 3, seed, False)
    for p in out:
        assert prefix + lo <= p.input_len <= prefix + hi
        assert n_tokens(tok, p.text) == p.input_len
    assert out.notes == []


class OddTokenizer:
    """A pathological tokenizer: one id a letter, plus a marker token whenever the text length is odd."""

    name = "odd"
    vocab_size = 27

    def encode(self, text: str) -> list[int]:
        ids = [ord(c) - 97 for c in text if "a" <= c <= "z"]
        return ids + [26] if len(text) % 2 else ids

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(chr(97 + i) for i in ids if i < 26)

    def chat_prompt(self, messages):
        return None


def test_random_records_the_real_length_when_it_cannot_be_exact():
    tok = OddTokenizer()
    out = make_prompts(RandomSpec(input_len=5, output_len=2), tok, 4, 0, False)
    assert [len(tok.encode(p.text)) for p in out] == [p.input_len for p in out]
    assert all(p.input_len != 5 for p in out)
    assert any("missed their exact length" in n for n in out.notes)
    even = make_prompts(RandomSpec(input_len=6, output_len=2), tok, 4, 0, False)
    assert [p.input_len for p in even] == [6] * 4 and even.notes == []


# --------------------------------------------------------------------------- sonnet


def _vllm_prefix_lines(tok, prefix_len: int) -> int:
    counts = [n_tokens(tok, line) for line in sonnet_lines()]
    avg = sum(counts) / len(counts)
    base = n_tokens(tok, tok.chat_prompt(user(INSTRUCTION)))
    return max(round((prefix_len - base) / avg), 0)


def test_sonnet_lengths_within_one_line_of_target(tok):
    spec = SonnetSpec()
    out = make_prompts(spec, tok, 30, 0, False)
    longest = max(n_tokens(tok, line) for line in sonnet_lines())
    for p in out:
        assert spec.input_len - longest < p.input_len <= spec.input_len
        assert n_tokens(tok, p.text) == p.input_len
        assert p.output_len == 150 and p.messages is None
    assert len({p.text for p in out}) == 30


def test_sonnet_shared_prefix_and_completions_text_is_chat_formatted(tok):
    out = make_prompts(SonnetSpec(input_len=700, prefix_len=300), tok, 10, 1, False)
    k = _vllm_prefix_lines(tok, 300)
    assert k > 5
    head = tok.chat_prompt(user(INSTRUCTION + "".join(sonnet_lines()[:k])))
    head = head[:head.index("<|im_end|>")]
    assert all(p.text.startswith(head) for p in out)
    assert all(p.text.startswith("<|im_start|>user\n" + INSTRUCTION + "FROM fairest creatures") for p in out)
    assert all(p.text.endswith("<|im_start|>assistant\n") for p in out)
    assert len({p.text for p in out}) == 10


def test_sonnet_chat_sends_raw_text_and_counts_the_same_tokens(tok):
    spec = SonnetSpec(input_len=400, prefix_len=100)
    plain = make_prompts(spec, tok, 5, 4, False)
    chat = make_prompts(spec, tok, 5, 4, True)
    for c, p in zip(chat, plain):
        assert c.text.startswith(INSTRUCTION)
        assert c.messages == tuple(user(c.text))
        assert tok.chat_prompt(list(c.messages)) == p.text
        assert c.input_len == p.input_len


def test_sonnet_determinism(tok):
    spec = SonnetSpec(input_len=300, prefix_len=50)
    a = make_prompts(spec, tok, 6, 11, False)
    assert list(a) == list(make_prompts(spec, tok, 6, 11, False))
    assert list(make_prompts(spec, tok, 2, 11, False)) == list(a[:2])
    assert [p.text for p in a] != [p.text for p in make_prompts(spec, tok, 6, 12, False)]


def test_sonnet_long_prompt(tok):
    spec = SonnetSpec(input_len=16384, prefix_len=12000, output_len=10)
    out = make_prompts(spec, tok, 2, 0, False)
    longest = max(n_tokens(tok, line) for line in sonnet_lines())
    for p in out:
        assert 16384 - longest < p.input_len <= 16384 == spec.input_len
        assert n_tokens(tok, p.text) == p.input_len
    # The prefix is longer than the poem: it cycles through it, shared by both prompts.
    shared = os.path.commonprefix([out[0].text, out[1].text])
    assert n_tokens(tok, shared) > 11000
    assert shared.count("FROM fairest creatures we desire increase,\n") >= 2


def test_sonnet_prefix_equal_to_input_len_fits(tok):
    out = make_prompts(SonnetSpec(input_len=300, prefix_len=300), tok, 3, 0, False)
    longest = max(n_tokens(tok, line) for line in sonnet_lines())
    assert all(300 - longest < p.input_len <= 300 for p in out)
    # vLLM's rounding asks for k prefix lines, more than fit here: the prefix drops lines
    # until it fits, and what is left (under a line) is filled with sampled lines.
    def head(j: int) -> str:
        return INSTRUCTION + "".join(sonnet_lines()[:j])

    k = _vllm_prefix_lines(tok, 300)
    assert n_tokens(tok, tok.chat_prompt(user(head(k)))) > 300
    fits = max(j for j in range(k) if n_tokens(tok, tok.chat_prompt(user(head(j)))) <= 300)
    assert all(p.text.startswith("<|im_start|>user\n" + head(fits)) for p in out)
    assert not all(p.text.startswith("<|im_start|>user\n" + head(fits + 1)) for p in out)


def test_sonnet_input_len_too_small(tok):
    with pytest.raises(UserError) as info:
        make_prompts(SonnetSpec(input_len=20, prefix_len=0), tok, 1, 0, False)
    text = str(info.value)
    assert "--sonnet-input-len 20 is too small" in text and "pass --sonnet-input-len" in text
    assert "\n" not in text


def test_sonnet_without_template_sends_raw_text_with_notes(plain_tok):
    out = make_prompts(SonnetSpec(), plain_tok, 3, 0, False)
    assert all(p.text.startswith(INSTRUCTION) for p in out)
    assert all(p.input_len == n_tokens(plain_tok, p.text) <= 550 for p in out)
    assert any("no chat template" in n for n in out.notes)
    assert any("raw prompt to /v1/completions" in n for n in out.notes)


# --------------------------------------------------------------------------- sharegpt


def _conv(human: str, gpt: str, first: str = "human") -> dict:
    return {"id": "x", "conversations": [{"from": first, "value": human}, {"from": "gpt", "value": gpt}]}


@pytest.fixture()
def sharegpt_file(tmp_path: Path) -> Path:
    long_words = " ".join(["thy beauty"] * 700)
    data = [
        _conv(f"Question {i}: shall I compare thee to a summer's day, tell me", f"Answer {i}: thou art more lovely")
        for i in range(6)
    ]
    data += [
        _conv("Hi", "A long enough reply for the filter"),                # prompt < 4 tokens
        _conv("A long enough prompt for the filter", "Ok"),              # reply < 4 tokens
        _conv(long_words, "A long enough reply for the filter"),         # prompt > 1024 tokens
        _conv("A long enough prompt for the filter", long_words + long_words),  # total > 2048
        {"id": "one", "conversations": [{"from": "human", "value": "only a question here"}]},
        {"id": "sys", "conversations": [
            {"from": "system", "value": "be brief"},
            {"from": "human", "value": "Which human turn is the prompt here?"},
            {"from": "gpt", "value": "The first human turn, after the system turn."}]},
        {"id": "bad", "conversations": "nope"},
        "not an object",
    ]
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_sharegpt_filters_and_output_lengths(tok, sharegpt_file):
    out = make_prompts(ShareGPTSpec(path=sharegpt_file), tok, 7, 0, False)
    assert out.notes == []
    texts = {p.text for p in out}
    assert texts == {f"Question {i}: shall I compare thee to a summer's day, tell me" for i in range(6)} | {
        "Which human turn is the prompt here?"}
    for p in out:
        assert p.input_len == n_tokens(tok, p.text) and p.messages is None
        if p.text.startswith("Question"):
            i = p.text.split(":")[0].split()[1]
            assert p.output_len == n_tokens(tok, f"Answer {i}: thou art more lovely")
        else:
            assert p.output_len == n_tokens(tok, "The first human turn, after the system turn.")


def test_sharegpt_fixed_output_len_skips_the_reply_length_check(tok, sharegpt_file):
    out = make_prompts(ShareGPTSpec(path=sharegpt_file, output_len=10), tok, 8, 0, False)
    assert {p.output_len for p in out} == {10}
    assert "A long enough prompt for the filter" in {p.text for p in out}


def test_sharegpt_cycles_with_a_warning_when_too_few_qualify(tok, sharegpt_file):
    with pytest.warns(UserWarning, match="only 7 ShareGPT conversations qualify for 10 prompts"):
        out = make_prompts(ShareGPTSpec(path=sharegpt_file), tok, 10, 0, False)
    assert len(out) == 10 and list(out[7:]) == list(out[:3])
    assert any("cycling" in n for n in out.notes)


def test_sharegpt_shuffle_is_seeded(tok, sharegpt_file):
    spec = ShareGPTSpec(path=sharegpt_file)
    a = make_prompts(spec, tok, 7, 0, False)
    assert list(a) == list(make_prompts(spec, tok, 7, 0, False))
    assert list(make_prompts(spec, tok, 3, 0, False)) == list(a[:3])
    orders = {tuple(p.text for p in make_prompts(spec, tok, 7, s, False)) for s in range(4)}
    assert len(orders) > 1


def test_sharegpt_chat_counts_the_template(tok, sharegpt_file):
    plain = make_prompts(ShareGPTSpec(path=sharegpt_file), tok, 7, 0, False)
    chat = make_prompts(ShareGPTSpec(path=sharegpt_file), tok, 7, 0, True)
    overhead = template_overhead(tok)
    for c, p in zip(chat, plain):
        assert c.messages == tuple(user(p.text)) and c.text == p.text
        assert c.input_len == n_tokens(tok, tok.chat_prompt(user(p.text))) == p.input_len + overhead


def test_sharegpt_errors(tok, tmp_path):
    with pytest.raises(UserError, match="no such file"):
        make_prompts(ShareGPTSpec(path=tmp_path / "missing.json"), tok, 1, 0, False)
    bad = tmp_path / "bad.json"
    bad.write_text("[{", encoding="utf-8")
    with pytest.raises(UserError, match="is not valid JSON"):
        make_prompts(ShareGPTSpec(path=bad), tok, 1, 0, False)
    bad.write_text('{"conversations": []}', encoding="utf-8")
    with pytest.raises(UserError, match="not a JSON list"):
        make_prompts(ShareGPTSpec(path=bad), tok, 1, 0, False)
    bad.write_text(json.dumps([{"conversations": [{"from": "gpt", "value": "hello there"}]}]), encoding="utf-8")
    with pytest.raises(UserError, match="no conversation with a human turn"):
        make_prompts(ShareGPTSpec(path=bad), tok, 1, 0, False)
    bad.write_text(json.dumps([_conv("Hi", "Hello")]), encoding="utf-8")
    with pytest.raises(UserError, match="passes the length filters") as info:
        make_prompts(ShareGPTSpec(path=bad), tok, 1, 0, False)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- jsonl


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_parsing(tok, tmp_path):
    path = _write_lines(tmp_path / "p.jsonl", [
        json.dumps({"prompt": "Shall I compare thee to a summer's day?", "output_len": 12}),
        "",
        "   ",
        json.dumps({"prompt": "Thou art more lovely", "max_tokens": 7, "meta": 1}),
        json.dumps({"messages": [{"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": "Rough winds do shake"}]}),
        json.dumps({"prompt": "And summer's lease hath all too short a date"}),
    ])
    out = make_prompts(JsonlSpec(path=path), tok, 4, 0, False)
    by_text = {p.text: p for p in out}
    assert len(by_text) == 4
    assert by_text["Shall I compare thee to a summer's day?"].output_len == 12
    assert by_text["Thou art more lovely"].output_len == 7
    assert by_text["And summer's lease hath all too short a date"].output_len is None
    rendered = tok.chat_prompt([{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Rough winds do shake"}])
    assert by_text[rendered].input_len == n_tokens(tok, rendered)
    assert all(p.input_len == n_tokens(tok, p.text) and p.messages is None for p in out)

    fixed = make_prompts(JsonlSpec(path=path, output_len=3), tok, 4, 0, False)
    assert {p.output_len for p in fixed} == {3}

    chat = make_prompts(JsonlSpec(path=path), tok, 4, 0, True)
    convs = [c.messages for c in chat]
    assert (({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Rough winds do shake"})
            in convs)
    assert tuple(user("Thou art more lovely")) in convs
    assert all(c.input_len == n_tokens(tok, tok.chat_prompt(list(c.messages))) for c in chat)

    a = make_prompts(JsonlSpec(path=path), tok, 4, 1, False)
    assert list(a) == list(make_prompts(JsonlSpec(path=path), tok, 4, 1, False))
    orders = {tuple(p.text for p in make_prompts(JsonlSpec(path=path), tok, 4, s, False)) for s in range(6)}
    assert len(orders) > 1
    with pytest.warns(UserWarning, match="only 4 JSONL records"):
        cycled = make_prompts(JsonlSpec(path=path), tok, 6, 1, False)
    assert list(cycled[4:]) == list(cycled[:2])


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "line 2 of .* is not valid JSON"),
    ("[1, 2]", "line 2 of .* is not a JSON object"),
    ('{"text": "x"}', 'line 2 of .* needs exactly one of "prompt" and "messages"'),
    ('{"prompt": "x", "messages": []}', "needs exactly one of"),
    ('{"prompt": 5}', 'line 2 of .*: "prompt" is not a non-empty string'),
    ('{"prompt": ""}', '"prompt" is not a non-empty string'),
    ('{"messages": [{"role": "user"}]}', '"messages" is not a non-empty list'),
    ('{"messages": []}', '"messages" is not a non-empty list'),
    ('{"prompt": "x", "output_len": 0}', "output_len 0 is not a positive integer"),
    ('{"prompt": "x", "max_tokens": "9"}', "output_len '9' is not a positive integer"),
    ('{"prompt": "x", "output_len": true}', "output_len True is not a positive integer"),
])
def test_jsonl_bad_line_names_the_line(tok, tmp_path, line, message):
    path = _write_lines(tmp_path / "bad.jsonl", ['{"prompt": "fine"}', line])
    with pytest.raises(UserError, match=message) as info:
        make_prompts(JsonlSpec(path=path), tok, 1, 0, False)
    assert "\n" not in str(info.value)


def test_jsonl_file_errors(tok, plain_tok, tmp_path):
    with pytest.raises(UserError, match="no such file"):
        make_prompts(JsonlSpec(path=tmp_path / "nope.jsonl"), tok, 1, 0, False)
    empty = _write_lines(tmp_path / "empty.jsonl", ["", "  "])
    with pytest.raises(UserError, match="has no prompts"):
        make_prompts(JsonlSpec(path=empty), tok, 1, 0, False)
    msgs = _write_lines(tmp_path / "m.jsonl", [json.dumps({"messages": user("hello")})])
    with pytest.raises(UserError, match="line 1 of .* has \"messages\", but the tokenizer has no chat template"):
        make_prompts(JsonlSpec(path=msgs), plain_tok, 1, 0, False)
    out = make_prompts(JsonlSpec(path=msgs), plain_tok, 1, 0, True)
    assert out[0].input_len == n_tokens(plain_tok, "hello")
    assert any("no chat template" in n for n in out.notes)


def test_no_warning_when_enough_records(tok, tmp_path):
    path = _write_lines(tmp_path / "p.jsonl", [json.dumps({"prompt": f"line {i}"}) for i in range(5)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = make_prompts(JsonlSpec(path=path), tok, 5, 0, False)
    assert sorted(p.text for p in out) == [f"line {i}" for i in range(5)] and out.notes == []
