"""`infermeter run` parses a `vllm bench serve` command line as vLLM does, and means what it meant."""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path

import pytest

from infermeter.cli.main import main
from infermeter.cli.options import build_parser, normalize, parse_run_args
from infermeter.cli.vllm_table import VLLM_OPTIONS, markdown_table
from infermeter.errors import UserError
from infermeter.runner.plan import resolve
from infermeter.runner.spec import runspec_from_flags

ROOT = Path(__file__).resolve().parents[3]
CORPUS = ROOT / "tests" / "fixtures" / "vllm_cli" / "corpus.txt"


def fields(cmd: str) -> dict:
    argv = shlex.split(cmd)
    if argv[:3] == ["vllm", "bench", "serve"]:
        argv = argv[3:]
    elif argv[:2] == ["python", "benchmark_serving.py"]:
        argv = argv[2:]
    return parse_run_args(argv)[0]


def test_docs_table_is_generated_from_the_data():
    doc = (ROOT / "docs" / "cli.md").read_text()
    block = doc.split("<!-- vllm-table:start -->\n", 1)[1].split("\n<!-- vllm-table:end -->", 1)[0]
    assert block == markdown_table()
    for o in VLLM_OPTIONS:
        assert o.status in ("same", "different", "rejected"), o.flag
        if o.status != "same":
            assert o.note, f"{o.flag}: a difference or a rejection must say how or why"


def test_every_vllm_option_parses_with_vllms_default():
    parser = build_parser()
    ns = parser.parse_args([])
    for o in VLLM_OPTIONS:
        value = getattr(ns, o.dest)
        if o.flag == "--request-rate":
            assert math.isinf(value)
        elif o.kwargs.get("nargs") in ("*", "+"):
            assert value is None
        else:
            assert value == o.default, o.flag


def test_prefixes_mean_the_vllm_option_they_name_in_vllm():
    """Every prefix that names exactly one vLLM option names it here too, even where it also begins
    one of infermeter's own options."""
    parser = build_parser()
    flags = [o.flag for o in VLLM_OPTIONS] + ["--no-self-timed"]
    checked = 0
    for flag in flags:
        for n in range(3, len(flag) + 1):
            prefix = flag[:n]
            hits = [f for f in flags if f.startswith(prefix)]
            if hits == [flag] or prefix == flag:
                assert normalize([prefix + "=1"], parser) == [flag + "=1"], prefix
                checked += 1
    assert checked > 500


@pytest.mark.parametrize("argv, expect", [
    (["--num-prompt=16"], {"num_prompts": 16}),
    (["--num_prompts", "7"], {"num_prompts": 7}),
    (["--goodput", "ttft:40", "tpot:6"], {"goodput": ["ttft:40", "tpot:6"]}),
    (["--metadata", "version=0.3.3", "tp=1"], {"metadata": {"version": "0.3.3", "tp": "1"}}),
    (["--metadata", " k = v "], {"metadata": {"k": "v"}}),  # vLLM strips key and value
    (["--header", "a=1", "b=2"], {"headers": {"a": "1", "b": "2"}}),
    (["--header", "x-url=http://h:1/p"], {"headers": {"x-url": "http://h:1/p"}}),
    (["--request-rate=2.5", "--burstiness", "inf"], {"request_rate": 2.5, "burstiness": math.inf}),
    (["--ramp-up-strategy", "linear", "--ramp-up-start-rps", "1", "--ramp-up-end-rps", "9"],
     {"ramp_up_strategy": "linear", "ramp_up_start_rps": 1, "ramp_up_end_rps": 9}),
    (["--input-len", "64", "--output-len", "8"],
     {"random_input_len": 64, "random_output_len": 8, "sharegpt_output_len": 8, "custom_output_len": 8}),
    (["--num-warmups", "3"], {"warmup_requests": 3}),
    (["--disable-tqdm"], {"progress": False}),
    (["--save-detailed"], {"save_generated_text": True}),
])
def test_vllm_spellings(argv, expect):
    got = parse_run_args(argv)[0]
    for key, value in expect.items():
        assert got[key] == value, key


def test_vllm_defaults_and_forced_values():
    f = parse_run_args([])[0]
    assert f["backend"] == "openai"
    assert f["temperature"] is None and f["top_p"] is None and f["top_k"] is None  # nothing sent unless asked
    assert f["extra_body"] == {}
    assert f["ignore_eos"] is True  # vLLM forces it for the random dataset
    assert f["percentile_metrics"] == "ttft,tpot,itl" and f["metric_percentiles"] == "99"
    assert f["stream"] is True and f["rate_schedule"] == "vllm"
    assert f["custom_output_len"] == 256
    f = parse_run_args(["--dataset-name", "sharegpt", "--dataset-path", "x.json"])[0]
    assert f["ignore_eos"] is False
    # --no-stream is vLLM's dataset-loading option: requests still stream
    assert parse_run_args(["--no-stream"])[0]["stream"] is True
    assert parse_run_args(["--no-stream-response"])[0]["stream"] is False


def test_sampling_flags_and_extra_body_merge_as_in_vllm():
    f = parse_run_args(["--min-p", "0.1", "--frequency-penalty", "0.5", "--presence-penalty", "0.2",
                        "--repetition-penalty", "1.1", "--logprobs", "2",
                        "--extra-body", '{"min_p": 0.3, "seed": 1}'])[0]
    assert f["extra_body"] == {"min_p": 0.3, "frequency_penalty": 0.5, "presence_penalty": 0.2,
                               "repetition_penalty": 1.1, "logprobs": 2, "seed": 1}
    chat = parse_run_args(["--backend", "openai-chat", "--logprobs", "2"])[0]
    assert "logprobs" not in chat["extra_body"]  # vLLM's chat requests never carry it


def test_sonnet_dataset_path_reaches_the_workload(tmp_path):
    text = tmp_path / "lines.txt"
    text.write_text("alpha beta\ngamma delta\n")
    spec = runspec_from_flags(fields(f"--dataset-name sonnet --dataset-path={text} --num-prompt=1"))
    assert resolve(spec).workload.path == text


@pytest.mark.parametrize("argv, needle", [
    (["--label", "x", "--no-oversample"], "--no-oversample"),
    (["--disable-shuffle"], "--disable-shuffle"),
    (["--request-id-prefix", "bench-"], "--request-id-prefix"),
    (["--ready-check-timeout-sec", "60"], "--ready-check-timeout-sec"),
    (["--chat-template-kwargs", "{}"], "--chat-template-kwargs"),
    (["--insecure"], "--insecure"),
    (["--plot-timeline"], "--plot-timeline"),
    (["--lora-modules", "a", "b"], "--lora-modules"),
    (["--tokenizer-mode", "mistral"], "--tokenizer-mode"),
    (["--backend", "openai-embeddings"], "--backend openai-embeddings"),
    (["--dataset-name", "hf"], "--dataset-name hf"),
    (["--dataset-name", "nope"], "--dataset-name 'nope'"),
    (["--dataset-path", "x.txt"], "random"),
    (["--percentile-metrics", "ttft,client_queue_time"], "client_queue_time"),
    (["--num-prompts", "many"], "--num-prompts"),
    (["--save"], "ambiguous option: --save"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--extra-body", "[1]"], "--extra-body must be a JSON object"),
    (["--extra-body", "{bad"], "--extra-body"),
])
def test_rejections_are_one_line_with_a_fix(argv, needle, capsys):
    with pytest.raises(UserError) as err:
        parse_run_args(argv)
    text = str(err.value)
    assert needle in text and "\n" not in text and " — " in text
    assert main(["run", *argv]) == 2
    out = capsys.readouterr().err.strip()
    assert out.startswith("infermeter: error:") and "\n" not in out


def test_every_rejected_option_is_refused():
    parser = build_parser()
    for o in VLLM_OPTIONS:
        if o.status != "rejected":
            continue
        kw = o.kwargs
        if kw.get("action") == "store_true":
            argv = [o.flag]
        elif kw.get("action") == "BooleanOptionalAction":
            argv = [o.flag]
        elif kw.get("nargs") == "+":
            argv = [o.flag, "a"]
        elif kw.get("type") is int:
            argv = [o.flag, str((o.default or 0) + 7)]
        elif kw.get("type") is float:
            argv = [o.flag, str((o.default or 0.0) + 0.5)]
        else:
            argv = [o.flag, "something-else"]
        parser.parse_args(normalize(argv, parser))  # parses as vLLM parses it...
        with pytest.raises(UserError) as err:  # ...and is refused with a reason
            parse_run_args(argv)
        assert o.flag in str(err.value), o.flag


def test_help_lists_every_vllm_option(capsys):
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    for o in VLLM_OPTIONS:
        assert o.flag in out, o.flag


def _corpus() -> list[tuple[str, str]]:
    out = []
    for block in CORPUS.read_text().split("\n\n"):
        lines = [ln for ln in block.splitlines() if not ln.startswith("#")]
        expect = [ln for ln in block.splitlines() if ln.startswith("# expect:")]
        if lines:
            out.append((" ".join(ln.rstrip("\\").strip() for ln in lines), expect[0][9:].strip()))
    return out


@pytest.mark.parametrize("cmd, expect", _corpus())
def test_corpus_of_real_command_lines(cmd, expect):
    """The write-up's command lines verbatim and the examples of vLLM's benchmark docs: each runs
    unchanged (or is refused with a reason where infermeter lacks the feature) and means what it meant."""
    if expect.startswith("rejected"):
        with pytest.raises(UserError, match=re.escape(expect.split(" ", 1)[1])):
            fields(cmd)
        return
    got = fields(cmd)
    for pair in expect.split(";"):
        key, _, value = pair.strip().partition("=")
        assert str(got[key]) == value, (key, got[key])
    resolve(runspec_from_flags({**got, "dataset_path": None} if got["dataset_name"] == "sonnet" else got))


def test_the_rendered_dstack_load_task_saves_its_results():
    """The multi-node load task's command line parses as 'infermeter run' flags and saves into the
    master's result folder (each node's shard name is set by runner/nodes.run_cluster)."""
    from infermeter.servers.loadtask import load_task_config

    conf = load_task_config(["--base-url", "http://h:8000", "--num-prompts", "10"], 2)
    line = conf["commands"][-1]
    assert line.startswith("infermeter node ")
    got, settings = parse_run_args(shlex.split(line)[2:])
    assert settings["save_result"] and got["result_dir"] == "/results" and got["num_prompts"] == 10
    assert got.get("shard") is None and got.get("start_at") is None  # the barrier and the rank set them


def test_field_errors_are_worded_with_the_flag_that_sets_the_field(capsys):
    from infermeter.cli.main import main
    from infermeter.cli.options import FLAG_OF_FIELD, OWN_FIELDS, OWN_OPTIONS, flag_name
    from infermeter.runner.spec import FIELD_SECTION, field_path

    setters = {f: {o.flag for o in VLLM_OPTIONS if f in o.fields} for f in FIELD_SECTION}
    for flags, kw in OWN_OPTIONS:
        setters.get(OWN_FIELDS.get(flags[0]) or kw.get("dest") or flags[0][2:].replace("-", "_"), set()).add(flags[0])
    for name, flag in FLAG_OF_FIELD.items():
        assert flag in setters[name] and flag_name(field_path(name)) == flag
    assert flag_name("load.warmup_requests") == "--warmup-requests" and flag_name("target.headers") == "--header"
    assert flag_name("output.cell_id") == "output.cell_id"  # no flag sets it
    assert main(["run", "--base-url", "http://127.0.0.1:1", "--num-prompts", "0"]) == 2
    assert capsys.readouterr().err.strip() == ("infermeter: error: --num-prompts 0 must be at least 1 — "
                                               "pass --num-prompts N with N >= 1")
