"""The start barrier over loopback: clock offsets, one start instant, files, late and lost nodes."""

from __future__ import annotations

import threading
import time

import pytest

from infermeter.errors import UserError
from infermeter.runner.barrier import NodeLink, Rendezvous


def _node(port, rank, n, out, clock=time.time, files=()):
    link = NodeLink("127.0.0.1", port, rank, n, connect_timeout=10, clock=clock)
    try:
        out[rank] = link.wait_start()
        link.send_files(list(files))
    except UserError as exc:
        out[rank] = exc
    finally:
        link.close()


def test_nodes_start_at_one_instant_each_in_its_own_clock(tmp_path):
    src = tmp_path / "r1.json"
    src.write_bytes(b'{"x": 1}' * 1000)
    rv = Rendezvous(2, tmp_path / "got", margin=0.3)
    port = rv.start()
    out: dict = {}
    ahead = 5.0  # node 1's clock runs 5 s ahead of the master's
    threads = [threading.Thread(target=_node, args=(port, 0, 2, out)),
               threading.Thread(target=_node, args=(port, 1, 2, out, lambda: time.time() + ahead, [src]))]
    for t in threads:
        t.start()
    assert rv.wait(20)
    for t in threads:
        t.join(5)
    rv.close()
    s0, s1 = rv.states
    assert s1.offset_s == pytest.approx(ahead, abs=0.02) and abs(s0.offset_s) < 0.02
    assert out[1] - out[0] == pytest.approx(ahead, abs=0.02)  # the same instant, in each node's clock
    assert out[0] == pytest.approx(rv.start_epoch, abs=0.02) and rv.start_epoch - time.time() < 0.3
    assert (s0.status, s1.status) == ("done", "done")
    assert (tmp_path / "got" / "r1.json").read_bytes() == src.read_bytes()  # streamed whole


def test_a_node_not_ready_in_time_is_late_and_one_that_comes_after_the_start_is_told(tmp_path):
    rv = Rendezvous(2, tmp_path, ready_timeout=0.5)
    port = rv.start()
    out: dict = {}
    t0 = threading.Thread(target=_node, args=(port, 0, 2, out))
    t0.start()
    assert rv.started.wait(10)
    _node(port, 1, 2, out)
    t0.join(5)
    assert rv.wait(10)
    rv.close()
    assert isinstance(out[1], UserError) and "after the others had started" in str(out[1])
    assert [s.status for s in rv.states] == ["done", "late"] and "not ready within" in rv.states[1].reason


def test_a_node_that_cannot_prepare_ends_the_barrier_with_its_error(tmp_path):
    rv = Rendezvous(2, tmp_path)
    port = rv.start()
    out: dict = {}
    t0 = threading.Thread(target=_node, args=(port, 0, 2, out))
    t0.start()
    link = NodeLink("127.0.0.1", port, 1, 2, connect_timeout=10)
    link.fail("--tokenizer x does not exist", "give a tokenizer", 2)
    assert rv.wait(10)
    t0.join(10)
    link.close()
    rv.close()
    assert "node 1: --tokenizer x does not exist" in str(rv.error) and rv.error.exit_code == 2
    assert isinstance(out[0], UserError)  # the waiting node hears the barrier is over


def test_a_wrong_rank_is_refused(tmp_path):
    rv = Rendezvous(2, tmp_path)
    port = rv.start()
    out: dict = {}
    _node(port, 0, 3, out)
    rv.close()
    assert isinstance(out[0], UserError) and "does not fit" in str(out[0])


def test_a_bad_setting_crosses_the_barrier_as_a_field_error(tmp_path):
    from infermeter.errors import FieldError
    from infermeter.runner.barrier import sent_error

    rv = Rendezvous(1, tmp_path, what="worker")
    port = rv.start()
    bad = FieldError("load.num_prompts", 0, "{load.num_prompts} {value} must be at least 1",
                     "pass {load.num_prompts} N")
    link = NodeLink("127.0.0.1", port, 0, 1, connect_timeout=10)
    link.fail(bad.problem, bad.fix, bad.exit_code, field_error=sent_error(bad))
    assert rv.wait(10)
    link.close()
    rv.close()
    assert isinstance(rv.error, FieldError) and rv.error.field == "load.num_prompts"
    worded = rv.error.worded(lambda path: "--" + path.split(".")[-1].replace("_", "-"))
    assert str(worded) == "worker 0: --num-prompts 0 must be at least 1 — pass --num-prompts N"


def test_a_field_error_json_cannot_keep_goes_as_its_text():
    from infermeter.errors import FieldError
    from infermeter.runner.barrier import received_error, sent_error

    bad = FieldError("load.request_rate", float("nan"), "{load.request_rate} {value} is not a rate")
    assert sent_error(bad) is None  # JSON has no NaN
    err = received_error({"problem": bad.problem, "fix": None, "exit_code": 2}, "node 1: ")
    assert not isinstance(err, FieldError) and str(err) == "node 1: load.request_rate nan is not a rate"
