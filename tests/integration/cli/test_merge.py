"""`infermeter merge` never replaces an earlier merge's files unless told to."""

from __future__ import annotations

import pytest

from infermeter.cli.main import main

pytestmark = pytest.mark.integration


def test_merge_refuses_an_existing_output_without_overwrite(tmp_path, capsys):
    out = tmp_path / "merged.json"
    out.write_text('{"earlier": true}')
    assert main(["merge", str(tmp_path / "shards"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "merged.json is already there" in err and "--overwrite" in err and "Traceback" not in err
    assert out.read_text() == '{"earlier": true}'  # untouched
    # With --overwrite the refusal is gone: what stops it now is the missing shards, said in one line.
    assert main(["merge", str(tmp_path / "shards"), "-o", str(out), "--overwrite"]) == 2
    assert "already there" not in capsys.readouterr().err
