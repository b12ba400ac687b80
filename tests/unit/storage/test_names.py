"""storage.names: a file another run wrote is never replaced."""

from __future__ import annotations

import pytest

from infermeter.errors import UserError
from infermeter.storage.names import check_plain_name, slug, write_new


def test_write_new_takes_the_next_free_name(tmp_path):
    first = write_new(tmp_path, "capacity.json", b"one")
    second = write_new(tmp_path, "capacity.json", b"two")
    assert first.name == "capacity.json" and second.name == "capacity-2.json"
    assert first.read_bytes() == b"one" and second.read_bytes() == b"two"  # the first run's answer is kept


def test_write_new_in_a_folder_that_is_a_file_is_a_user_error(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("x")
    with pytest.raises(UserError, match="a file is in the way|is a file"):
        write_new(blocker / "sub", "capacity.json", b"{}")


def test_names_from_servers_are_slugs():
    assert slug("meta/llama\x1b[31m" + "x" * 300).isascii() and len(slug("x" * 300)) <= 64
    with pytest.raises(UserError, match="plain file name"):
        check_plain_name("../../x.json")
