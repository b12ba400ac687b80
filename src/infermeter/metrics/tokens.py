"""Are the server's token counts true?  Every request's ``usage`` count against what was received.

A server's ``usage.completion_tokens`` (TGI: ``details.generated_tokens``) is
what throughput and equal work rest on, so it is checked on every successful
request against what the client actually received:

* content events (chunks) streamed: each carries at least one token, so more
  events than the server counted means the server undercounted;
* fewer events than counted is normal when a chunk carries several tokens: the
  generated text is then tokenized with the run's tokenizer (where the text was
  kept: the first ``RecordStore.KEEP_TEXT`` requests of a run, or every request
  with ``--save-detailed``) and compared with the count.  Only a re-encoding
  *shorter* than the count is evidence: re-encoding decoded text runs longer
  than the tokens generated whenever a model emits byte-level pieces or rare
  merges (measured on the embedded engine's tiny model: 64-token outputs,
  62-63 chunks, re-encoded to 69-78 tokens), so a longer re-encoding is
  counted in ``longer_by_tokenizer`` and trusted to the server.  A server that
  claims tokens it never streamed sends fewer chunks *and* less text; the
  count received is then the larger of the chunks and the re-encoding (each
  chunk carries a token at least).

A request disagrees when the received count differs from the server's by more
than ``max(ABS_TOLERANCE, REL_TOLERANCE x server count)`` tokens: re-encoding
decoded text can merge tokens differently, and a server may count an end token
that has no text, so a token or two is not a disagreement.  For a request
that disagrees the count actually received is used everywhere (throughput,
TPOT, equal work), and the run is INVALID (``server-count-mismatch``,
docs/validity.md).  Requests whose text was not kept and that streamed fewer
events than counted cannot be checked: ``unverified`` counts them.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Protocol

from infermeter.core.records import RequestRecord

ABS_TOLERANCE = 2  # tokens
REL_TOLERANCE = 0.05  # of the server's count
EXAMPLES = 5


class _Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...


def disagrees(server: int, received: int) -> bool:
    return abs(received - server) > max(ABS_TOLERANCE, REL_TOLERANCE * server)


def crosscheck_counts(records: Iterable[RequestRecord], tokenizer: _Tokenizer | Callable[[str], int] | None = None
                      ) -> dict[str, Any]:
    """The check's figures (``work.token_count_crosscheck``); ``received`` lists
    ``[index, tokens received]`` for every request whose server count was wrong."""
    count: Callable[[str], int] | None
    if tokenizer is None:
        count = None
    elif hasattr(tokenizer, "encode"):
        count = lambda text: len(tokenizer.encode(text))  # noqa: E731
    else:
        count = tokenizer
    checked = by_events = by_tokenizer = unverified = longer = 0
    received: list[list[int]] = []
    examples: list[dict[str, Any]] = []
    server_total = received_total = 0
    for r in records:
        server = r.output_tokens_server
        if not r.ok or r.warmup or server is None:
            continue
        checked += 1
        events = r.output_events
        got: int | None
        how = "events"
        if events == server:
            got = events
        elif events > server:
            got = events  # each content event carries a token at least: the server undercounted
        elif r.generated_text is not None and count is not None:
            got, how = max(events, count(r.generated_text)), "tokenizer"
            if got > server:  # re-encoding runs long (see above): not evidence against the server
                longer += 1
                got = server
        else:
            got = None
        if got is None:
            unverified += 1
            server_total += server
            received_total += server
            continue
        if how == "events":
            by_events += 1
        else:
            by_tokenizer += 1
        server_total += server
        if disagrees(server, got):
            received.append([r.index, got])
            received_total += got
            if len(examples) < EXAMPLES:
                examples.append({"index": r.index, "server": server, "received": got, "events": events,
                                 "by": how})
        else:
            received_total += server
    return {
        "checked": checked, "by_events": by_events, "by_tokenizer": by_tokenizer, "unverified": unverified,
        "longer_by_tokenizer": longer, "mismatched": len(received), "server_output_tokens": server_total,
        "used_output_tokens": received_total,
        "count_used": "received where the server's count disagreed, else the server's" if received
        else "server",
        "tolerance": {"tokens": ABS_TOLERANCE, "fraction": REL_TOLERANCE},
        "examples": examples, "received": received,
    }


def received_counts(check: dict[str, Any] | None) -> dict[int, int]:
    """``{request index: tokens received}`` for the requests a check found wrong (for ``compute``)."""
    return {int(i): int(n) for i, n in ((check or {}).get("received") or [])}


def merge_checks(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Shards' checks as one (their requests are disjoint)."""
    parts = [p for p in parts if p.get("checked")]
    if not parts:
        return {"checked": 0, "mismatched": 0, "received": []}
    out = dict(parts[0])
    for key in ("checked", "by_events", "by_tokenizer", "unverified", "longer_by_tokenizer", "mismatched",
                "server_output_tokens", "used_output_tokens"):
        out[key] = sum(int(p.get(key) or 0) for p in parts)
    out["received"] = [pair for p in parts for pair in (p.get("received") or [])]
    out["examples"] = [e for p in parts for e in (p.get("examples") or [])][:EXAMPLES]
    if out["received"]:
        out["count_used"] = "received where the server's count disagreed, else the server's"
    return out
