import pytest
import yaml

from infermeter.cli.main import main
from infermeter.errors import UserError
from infermeter.servers.dstack_schema import validate_with_dstack
from infermeter.servers.lint import lint_text
from infermeter.servers.loadtask import load_task_config, render_load_task

ARGS = ["--base-url", "http://127.0.0.1:8000", "--model", "m", "--request-rate", "200", "--num-prompts", "1000"]


def test_load_task_runs_one_node_per_shard_meeting_at_the_master():
    conf = load_task_config(ARGS, 4, env_names=["OPENAI_API_KEY"])
    assert conf["nodes"] == 4 and conf["resources"]["gpu"] == 0
    run = conf["commands"][-1]
    assert run.startswith("infermeter node ") and "--request-rate 200" in run
    assert "--start-at" not in run and "--shard" not in run  # the barrier and DSTACK_NODE_RANK set them
    assert "--result-dir /results" in run
    assert conf["env"] == ["OPENAI_API_KEY"]  # a name, never a value


def test_rendered_load_task_validates_with_dstack_and_lints_clean():
    text = render_load_task(ARGS, 3)
    check = validate_with_dstack(yaml.safe_load(text))
    if not check.available:
        pytest.skip("dstack is not installed (pip install 'infermeter[dstack]')")
    assert check.errors == []
    assert [f for f in lint_text(text, "load.dstack.yml") if f.severity == "error"] == []


@pytest.mark.parametrize("kwargs, args, word", [
    ({"nodes": 0}, ARGS, "--nodes"),
    ({"nodes": 2, "image": "python:latest"}, ARGS, "pinned tag"),
    ({"nodes": 2}, ARGS + ["--shard", "0/2"], "--shard"),
    ({"nodes": 2, "env_names": ["BAD-NAME"]}, ARGS, "BAD-NAME"),
])
def test_bad_load_task_input(kwargs, args, word):
    nodes = kwargs.pop("nodes")
    with pytest.raises(UserError) as err:
        load_task_config(args, nodes, **kwargs)
    assert word in str(err.value)


def test_cli_prints_the_task(capsys):
    assert main(["shards", "--nodes", "2", "--", *ARGS]) == 0
    conf = yaml.safe_load(capsys.readouterr().out)
    assert conf["nodes"] == 2 and "--model m" in conf["commands"][-1]
