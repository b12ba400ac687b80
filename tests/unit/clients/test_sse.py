from hypothesis import given, settings, strategies as st

from infermeter.clients.sse import (MAX_EVENT_BYTES, OversizedEvent, block_data, events_from_bytes, iter_event_blocks,
                                   parse_events, simple_events)

import pytest


def test_events_split_across_reads_are_timed_by_the_completing_read():
    ev = parse_events([1.0, 2.0, 3.0], [b'data: {"a"', b': 1}\n', b'\ndata: [DONE]\n\n'])
    assert [(e.time, e.data) for e in ev] == [(3.0, '{"a": 1}'), (3.0, "[DONE]")]


def test_several_events_in_one_read():
    ev = parse_events([5.0], [b"data: a\n\ndata: b\n\ndata: c\n\n"])
    assert [e.data for e in ev] == ["a", "b", "c"]
    assert all(e.time == 5.0 for e in ev)


def test_crlf_and_cr_line_endings_including_crlf_split_across_reads():
    ev = parse_events([1, 2, 3], [b"data: x\r", b"\n\r\ndata: y\r\r", b"data: z\r\n\r\n"])
    assert [(e.time, e.data) for e in ev] == [(2, "x"), (2, "y"), (3, "z")]


def test_comments_named_events_and_multiline_data():
    ev = events_from_bytes(b": keep-alive\n\nevent: ping\n\ndata: one\ndata:two\n\n")
    # a comment-only block is an event without data (a keep-alive)
    assert [(e.event, e.data) for e in ev] == [(None, None), ("ping", None), (None, "one\ntwo")]


def test_unterminated_tail_is_reported_as_such():
    ev = events_from_bytes(b"data: a\n\ndata: partial")
    assert ev[-1].data == "partial" and ev[-1].terminated is False
    assert ev[0].terminated is True


def test_oversized_event_raises():
    with pytest.raises(OversizedEvent):
        events_from_bytes(b"data: " + b"x" * (MAX_EVENT_BYTES + 10) + b"\n\n")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
                        min_size=1, max_size=40), min_size=1, max_size=12),
       st.sampled_from([b"\n", b"\r\n", b"\r"]), st.data())
def test_any_split_of_a_stream_gives_the_same_events(payloads, eol, data):
    stream = b"".join(b"data: " + p.encode() + eol + eol for p in payloads)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(stream)), max_size=8))))
    pieces, last = [], 0
    for c in cuts + [len(stream)]:
        pieces.append(stream[last:c])
        last = c
    ev = parse_events(list(range(len(pieces))), pieces)
    # only the one space after "data:" is field syntax: the payload comes back exactly
    assert [e.data for e in ev] == payloads


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=6))
def test_parser_never_crashes_on_arbitrary_bytes(blob, cuts):
    cuts = sorted(c for c in set(cuts) if c <= len(blob))
    pieces, last = [], 0
    for c in cuts + [len(blob)]:
        pieces.append(blob[last:c])
        last = c
    for e in parse_events([0.0] * len(pieces), pieces):
        assert e.data is None or isinstance(e.data, str)


def _general(times, pieces):
    """What the general framing makes of a stream: (time, data bytes) per terminated event."""
    return [(t, block_data(b)) for t, b, term in iter_event_blocks(times, pieces) if term]


def _cut(stream: bytes, cuts: list[int]) -> list[bytes]:
    pieces, last = [], 0
    for c in sorted(c for c in set(cuts) if c <= len(stream)) + [len(stream)]:
        pieces.append(stream[last:c])
        last = c
    return pieces


def test_simple_events_times_each_event_by_the_read_that_closed_it():
    pieces = [b'data: {"a"', b': 1}\n', b'\ndata: b\n\ndata: [DONE]\n', b'\n']
    assert simple_events([1.0, 2.0, 3.0, 4.0], pieces) == ([3.0, 3.0, 4.0], [b'{"a": 1}', b"b", b"[DONE]"])


@pytest.mark.parametrize("stream", [
    b"data: a\r\n\r\n",  # CR
    b": keep-alive\n\ndata: a\n\n",  # a comment
    b"data: a\n\nevent: ping\n\n",  # an event without data
    b"data: one\ndata: two\n\n",  # multi-line data
    b"data: a\n\n\ndata: b\n\n",  # a stray blank line
    b"data: a\n\ndata: partial",  # unterminated
    b"data:a\n\n",  # no space after the colon
    b"\ndata: a\n\n",  # a leading blank line
])
def test_simple_events_leaves_every_other_shape_to_the_general_framing(stream):
    assert simple_events([0.0], [stream]) is None


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"data: ", b"data:", b"x", b"{}", b"\n", b"\r", b"\n\n", b": c", b"event: e",
                                 b"data: [DONE]"]), max_size=30),
       st.lists(st.integers(0, 200), max_size=8))
def test_simple_events_agrees_with_the_general_framing_whenever_it_answers(parts, cuts):
    stream = b"".join(parts)
    pieces = _cut(stream, cuts)
    times = [float(i) for i in range(len(pieces))]
    got = simple_events(times, pieces)
    if got is not None:
        assert list(zip(*got)) == _general(times, pieces)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=30).filter(lambda b: b"\n" not in b and b"\r" not in b),
                min_size=1, max_size=12),
       st.lists(st.integers(0, 400), max_size=8))
def test_simple_events_answers_for_every_single_line_data_stream(payloads, cuts):
    stream = b"".join(b"data: " + p + b"\n\n" for p in payloads)
    pieces = _cut(stream, cuts)
    times = [float(i) for i in range(len(pieces))]
    got = simple_events(times, pieces)
    assert got is not None
    assert list(zip(*got)) == _general(times, pieces)


def test_simple_events_bound_each_event_not_the_stream():
    # a long stream of small events (more than MAX_EVENT_BYTES in all) keeps the fast path ...
    event = b"data: " + b"x" * 1000 + b"\n\n"
    n = MAX_EVENT_BYTES // len(event) + 10
    got = simple_events([1.0], [event * n])
    assert got is not None and len(got[1]) == n
    # ... while one event near the limit goes to the general framing, which judges its size
    assert simple_events([1.0], [b"data: " + b"x" * MAX_EVENT_BYTES + b"\n\n"]) is None
