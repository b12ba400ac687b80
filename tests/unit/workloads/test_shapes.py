"""shared-prefix, multi-turn and trace workloads; step, time-bounded and trace load plans."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from infermeter.errors import FieldError, UserError
from infermeter.load.schedule import LoadMode, arrival_offsets, make_plan, offered_rates, trace_plan
from infermeter.workloads import MultiTurnSpec, SharedPrefixSpec, TraceSpec, load_tokenizer, make_prompts
from infermeter.workloads.traces import read_trace

CONVS = Path(__file__).resolve().parents[2] / "fixtures" / "conversations.jsonl"


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    return load_tokenizer(tokenizer_dir)


@pytest.mark.parametrize("chat", [False, True])
def test_shared_prefix_is_exact_grouped_and_deterministic(tok, chat):
    s = SharedPrefixSpec(groups=3, prefix_len=40, question_len=12, output_len=5)
    a = make_prompts(s, tok, 9, 7, chat)
    assert a == make_prompts(s, tok, 9, 7, chat) and a != make_prompts(s, tok, 9, 8, chat)
    assert make_prompts(s, tok, 4, 7, chat) == a[:4]  # the first n do not depend on the count
    assert len({p.input_len for p in a}) == 1
    if not chat:
        assert all(len(tok.encode(p.text)) == 52 == p.input_len for p in a)
    prefix = [tok.decode(tok.encode(p.text)[:40]) for p in a]
    for i in range(9):  # request i is in group i % 3: same prefix text as its group, another than the others
        assert a[i].text.startswith(prefix[i % 3]) and prefix[i] == prefix[i % 3]
    assert len({prefix[0], prefix[1], prefix[2]}) == 3
    assert all(p.output_len == 5 for p in a)


def test_shared_prefix_settings_are_named_in_errors():
    from infermeter.cli.options import worded_for_cli

    with pytest.raises(FieldError, match="workload.prefix_groups 0") as info:
        SharedPrefixSpec(groups=0)
    assert "--prefix-groups 0" in str(worded_for_cli(info.value))
    with pytest.raises(FieldError, match="workload.question_len") as info:
        SharedPrefixSpec(question_len=0)
    assert "--question-len" in str(worded_for_cli(info.value))


@pytest.mark.parametrize("source", ["infermeter:mooncake-small", "infermeter:burstgpt-small", "infermeter:azure-small"])
def test_bundled_traces_read_to_the_same_rows(source):
    rows, _, notes = read_trace(source)
    ref, block, _ = read_trace("infermeter:mooncake-small")
    assert block == 16 and len(rows) == 48 and not notes
    assert [(r.input_len, r.output_len) for r in rows] == [(r.input_len, r.output_len) for r in ref]
    assert [r.t - rows[0].t for r in rows] == pytest.approx([r.t - ref[0].t for r in ref], abs=2e-3)


def test_trace_prompts_are_exact_and_share_hash_blocks(tok):
    spec = TraceSpec(path="infermeter:mooncake-small")
    rows, _, _ = read_trace(spec.path)
    a = make_prompts(spec, tok, 30, 0, False)
    assert a == make_prompts(spec, tok, 30, 0, False)
    assert [p.input_len for p in a] == [len(tok.encode(p.text)) for p in a] == [r.input_len for r in rows[:30]]
    assert a.offsets == pytest.approx([r.t - rows[0].t for r in rows[:30]])
    # two requests with the same leading hash blocks start with the same text for those blocks
    pairs = [(i, j) for i in range(30) for j in range(i) if rows[i].hash_ids[:2] == rows[j].hash_ids[:2]]
    assert pairs
    for i, j in pairs:
        ti, tj = tok.encode(a[i].text), tok.encode(a[j].text)
        assert ti[:30] == tj[:30]  # 2 blocks of 16, less a boundary token
    firsts = {rows[i].hash_ids[0] for i in range(30)}
    texts = {rows[i].hash_ids[0]: tok.encode(a[i].text)[:15] for i in range(30)}
    assert len({tuple(t) for t in texts.values()}) == len(firsts)  # different blocks, different tokens


def test_trace_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="no bundled trace"):
        read_trace("infermeter:nope")
    bad = tmp_path / "t.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="not a Mooncake JSONL, BurstGPT CSV or Azure CSV"):
        read_trace(str(bad))
    bad.write_text("Timestamp,Request tokens,Response tokens\n0.5,10,0\n1.0,x,3\n")
    with pytest.raises(UserError, match="line 3 .* not a burstgpt row"):
        read_trace(str(bad))
    bad.write_text("Timestamp,Request tokens,Response tokens\n0.5,10,0\n1.0,12,3\n")
    rows, _, notes = read_trace(str(bad))
    assert len(rows) == 1 and "1 rows" in notes[0]


def test_multi_turn_conversations_from_jsonl(tok):
    spec = MultiTurnSpec(path=CONVS, output_len=7)
    a = make_prompts(spec, tok, 3, 0, True)
    assert a == make_prompts(spec, tok, 3, 0, True)
    convs = a.conversations
    assert sorted(len(c.turns) for c in convs) == [2, 3, 3]
    assert [c.session_id for c in convs] == [0, 1, 2]
    for c in convs:
        lens = [t.input_len for t in c.turns]
        assert lens == sorted(lens) and lens[0] < lens[-1]  # each turn carries the history
        assert all(t.output_len == 7 for t in c.turns)
        hist = c.history(1, ["A0"])
        assert [m["role"] for m in hist][-3:] == ["user", "assistant", "user"] and hist[-2]["content"] == "A0"
    assert [p.messages for p in a] == [c.history(0, []) for c in convs]
    short = make_prompts(MultiTurnSpec(path=CONVS, max_turns=1), tok, 3, 0, True)
    assert all(len(c.turns) == 1 for c in short.conversations)
    with pytest.raises(UserError, match="chat"):
        make_prompts(spec, tok, 3, 0, False)


def test_multi_turn_from_sharegpt(tok, tmp_path):
    import json

    f = tmp_path / "sg.json"
    f.write_text(json.dumps([{"conversations": [
        {"from": "system", "value": "Be kind."}, {"from": "human", "value": "hello there"},
        {"from": "gpt", "value": "hi, how can I help"}, {"from": "human", "value": "tell me more"},
        {"from": "gpt", "value": "about what"}, {"from": "human", "value": "no reply to this one"}]}]))
    a = make_prompts(MultiTurnSpec(path=f), tok, 1, 0, True)
    (c,) = a.conversations
    assert c.system == "Be kind." and [t.content for t in c.turns] == ["hello there", "tell me more"]
    assert c.turns[0].output_len == len(tok.encode("hi, how can I help"))


def test_step_plan_counts_offsets_and_rates():
    plan = make_plan(1000, steps=(2.0, 4.0, 8.0), step_hold_s=5.0, seed=0)
    assert plan.num_requests == 70 and plan.mode is LoadMode.RATE
    off = arrival_offsets(plan, 3)
    assert np.all(np.diff(off) >= 0) and np.array_equal(off, arrival_offsets(plan, 3))
    assert [int(((off >= 5 * k) & (off < 5 * (k + 1))).sum()) for k in range(3)] == [10, 20, 40]
    assert offered_rates(plan).tolist() == [2.0] * 10 + [4.0] * 20 + [8.0] * 40
    const = make_plan(1, steps=(2.0,), step_hold_s=2.0, burstiness=math.inf)
    assert arrival_offsets(const, 0).tolist() == [0.0, 0.5, 1.0, 1.5]
    assert "steps of 2, 4, 8 req/s" in plan.describe()


def test_duration_plans():
    plan = make_plan(10, request_rate=20.0, duration=5.0, seed=1)
    off = arrival_offsets(plan, 1)
    assert len(off) == plan.num_requests and off[-1] < 5.0 and 60 < plan.num_requests < 140
    assert plan.num_requests == make_plan(10, request_rate=20.0, duration=5.0, seed=1).num_requests
    longer = make_plan(10, request_rate=20.0, duration=10.0, seed=1)
    assert np.allclose(arrival_offsets(longer, 1)[:len(off)], off)  # the same process, cut later
    closed = make_plan(4, max_concurrency=2, duration=3.0, duration_grace=1.0)
    assert closed.mode is LoadMode.CONCURRENCY and closed.duration_s == 3.0 and closed.duration_grace_s == 1.0
    assert offered_rates(closed) is None


@pytest.mark.parametrize("kw,match", [
    ({"duration": 5.0}, "--duration needs a load that paces itself"),
    ({"duration": -1.0, "max_concurrency": 2}, "--duration -1"),
    ({"steps": (2.0,)}, "go together"),
    ({"steps": (2.0, 0.0), "step_hold_s": 1.0}, "positive finite"),
    ({"steps": (2.0,), "step_hold_s": 1.0, "request_rate": 3.0}, "--request-rate"),
    ({"steps": (2.0,), "step_hold_s": 1.0, "duration": 3.0}, "the steps set the run's length"),
    ({"duration": 5.0, "request_rate": 2.0, "ramp_up": ("linear", 1.0, 2.0)}, "--ramp-up-strategy cannot"),
    ({"duration": 5.0, "request_rate": 2.0, "duration_grace": -1.0}, "--duration-grace"),
])
def test_bad_load_shapes_are_one_line_errors(kw, match):
    from infermeter.cli.options import worded_for_cli

    with pytest.raises(FieldError) as info:
        make_plan(10, **kw)
    assert re.search(match, str(worded_for_cli(info.value)))


def test_trace_plan():
    plan = trace_plan(make_plan(10, max_concurrency=3), 48, 2.0)
    assert plan.arrival == "trace" and plan.max_concurrency == 3 and offered_rates(plan) is None
    assert "trace replay at 2x" in plan.describe()
    with pytest.raises(UserError, match="own schedule"):
        trace_plan(make_plan(10, request_rate=3.0), 48, 1.0)
    with pytest.raises(FieldError, match="workload.trace_speed 0") as info:
        trace_plan(make_plan(10), 48, 0.0)
    assert info.value.field == "workload.trace_speed"


def test_cli_flags_reach_the_run_spec():
    from infermeter.cli.options import parse_run_args
    from infermeter.runner.plan import resolve
    from infermeter.runner.spec import RunSpec

    fields, _ = parse_run_args(["--dataset-name", "shared-prefix", "--prefix-groups", "3", "--prefix-len", "64",
                                "--question-len", "8", "--rate-steps", "2,4", "--step-hold-s", "1"])
    s = resolve(RunSpec.from_flat(fields))
    assert s.workload == SharedPrefixSpec(groups=3, prefix_len=64, question_len=8, output_len=128)
    assert s.load.steps == (2.0, 4.0)
    fields, _ = parse_run_args(["--dataset-name", "trace", "--dataset-path", "infermeter:azure-small",
                                "--trace-speed", "3", "--max-concurrency", "4", "--duration", "9"])
    plan = resolve(RunSpec.from_flat(fields)).load
    assert plan.arrival == "trace" and plan.trace_speed == 3.0 and plan.duration_s == 9.0
    with pytest.raises(UserError, match="--rate-steps"):
        parse_run_args(["--rate-steps", "2,x", "--step-hold-s", "1"])
    with pytest.raises(FieldError, match="needs workload.dataset_path") as info:
        resolve(RunSpec.from_flat(dict(dataset_name="multi-turn")))
    assert info.value.field == "workload.dataset_path"


def test_records_keep_the_new_columns():
    from infermeter.core.records import RequestRecord
    from infermeter.core.recordstore import RecordStore

    rec = RequestRecord(index=3, warmup=False, scheduled=1.0, input_len=5, requested_output_len=2,
                        session_id=7, turn=2, offered_rate=4.5)
    rec.shift(0.5)
    assert rec.offered_rate == 4.5 and rec.scheduled == 0.5  # a rate is not a clock reading
    store = RecordStore()
    store.append(rec)
    back = store[0]
    assert (back.session_id, back.turn, back.offered_rate) == (7, 2, 4.5)
    assert RequestRecord.from_json(rec.to_json()) == rec


SWEEP = """\
name: shapes
targets:
  srv:
    url: http://127.0.0.1:8000
    model: m
workloads:
  prefix:
    dataset: shared-prefix
    prefix_groups: 4
    prefix_len: 256
    question_len: 32
    load: {concurrency: [2]}
  chat:
    dataset: multi-turn
    dataset_path: conversations.jsonl
    multi_turn_think_time: 1.5
    duration: 30
    load: {concurrency: [4]}
  replay:
    dataset: trace
    dataset_path: infermeter:mooncake-small
    trace_speed: 2
    load: {burst: [48]}
"""


def test_sweep_specs_take_the_new_workloads():
    from infermeter.experiments.cells import build_plan, runspec_from_settings
    from infermeter.experiments.specfile import parse_spec
    from infermeter.runner.plan import resolve

    spec = parse_spec(SWEEP, source="spec.yaml")
    assert spec.workloads["prefix"].lengths() == (288, 128)
    cells = build_plan(spec)
    runs = {c.workload: resolve(runspec_from_settings(c.settings, base_url="http://127.0.0.1:8000", tokenizer=None,
                                                      result_dir="/tmp")) for c in cells}
    assert runs["prefix"].workload == SharedPrefixSpec(groups=4, prefix_len=256, question_len=32)
    chat = runs["chat"]
    assert chat.workload.think_time == 1.5 and chat.load.duration_s == 30.0
    replay = runs["replay"].load
    assert replay.arrival == "trace" and replay.trace_speed == 2.0
    with pytest.raises(UserError, match="prefix_len does not apply to dataset trace"):
        parse_spec(SWEEP.replace("trace_speed: 2", "prefix_len: 2"), source="spec.yaml")
