"""llama-server build orchestration, without compiling anything."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from infermeter.embedded import build, opt_levels
from infermeter.embedded.build import (
    CMAKE_FLAGS,
    LLAMA_CPP_PYTHON_VERSION,
    engine_dir,
    ensure_llama_server,
    llama_server_version,
)
from infermeter.embedded.paths import file_lock
from infermeter.errors import EngineError


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("INFERMETER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("INFERMETER_LLAMA_SERVER", raising=False)
    return tmp_path / "cache"


def _install_fake_build(flags=CMAKE_FLAGS, version=LLAMA_CPP_PYTHON_VERSION) -> Path:
    folder = engine_dir()
    folder.mkdir(parents=True)
    binary = _script(folder / "llama-server", "echo 'version: 42 (deadbee)' >&2\n")
    (folder / "build.json").write_text(json.dumps({
        **build._stamp(), "llama_cpp_python": version, "cmake_flags": list(flags)}))
    return binary


def test_engine_dir_is_versioned_under_the_cache(cache: Path) -> None:
    assert engine_dir() == cache / "engine" / f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}"


def test_existing_current_build_is_reused(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = _install_fake_build()
    monkeypatch.setattr(build, "_build", lambda *a: pytest.fail("rebuilt a current binary"))
    assert ensure_llama_server() == binary


@pytest.mark.parametrize("stale", ["flags", "version"])
def test_changed_flags_or_version_trigger_a_rebuild(cache: Path, monkeypatch: pytest.MonkeyPatch,
                                                    stale: str) -> None:
    if stale == "flags":
        _install_fake_build(flags=CMAKE_FLAGS[:-1])
    else:
        _install_fake_build(version="0.0.1")
    calls = []
    monkeypatch.setattr(build, "_build", lambda root, report: calls.append(root))
    ensure_llama_server()
    assert calls == [cache / "engine"]


def test_env_override_is_used_without_building(cache: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _script(tmp_path / "my-llama-server", "echo 'version: 7 (abc)'\n")
    monkeypatch.setenv("INFERMETER_LLAMA_SERVER", str(fake))
    monkeypatch.setattr(build, "_build", lambda *a: pytest.fail("built despite the override"))
    assert ensure_llama_server() == fake.resolve()
    assert not (cache / "engine").exists()


def test_env_override_missing_file_is_a_one_line_error(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERMETER_LLAMA_SERVER", "/nonexistent/llama-server")
    with pytest.raises(EngineError) as info:
        ensure_llama_server()
    assert "INFERMETER_LLAMA_SERVER" in str(info.value) and "\n" not in str(info.value)


def test_missing_cmake_names_the_fix(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(EngineError) as info:
        ensure_llama_server()
    assert "cmake" in info.value.problem
    assert "apt-get install cmake g++" in (info.value.fix or "")


def test_failed_step_reports_phase_log_and_fix(cache: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir / "cmake", "echo '-- Configuring'\n"
                               "echo 'CMake Error: No CMAKE_CXX_COMPILER could be found.'\nexit 1\n")
    _script(bin_dir / "c++", "exit 0\n")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    src = tmp_path / "src"
    src.mkdir()
    monkeypatch.setattr(build, "_fetch_sources", lambda step, work, report: src)
    phases: list[str] = []
    with pytest.raises(EngineError) as info:
        ensure_llama_server(lambda phase, done, total: phases.append(phase))
    message = str(info.value)
    assert "configure" in message and "CMAKE_CXX_COMPILER" in message
    assert str(build.build_log_path()) in message
    assert "apt-get install cmake g++" in (info.value.fix or "")
    assert "CMake Error" in build.build_log_path().read_text()
    assert phases == ["configure"]
    assert not (cache / "engine" / f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}").exists()
    assert not list((cache / "engine").glob(".work-*"))


def test_successful_build_installs_binary_and_stamp(cache: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake cmake that 'compiles' with ninja-style progress lines."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir / "cmake", """
case "$1" in
  --build)
    echo '[1/3] Building CXX object a.o'
    echo '[2/3] Building CXX object b.o'
    echo '[3/3] Linking CXX executable bin/llama-server'
    mkdir -p "$2/bin"; printf '#!/bin/sh\\necho "version: 1 (x)"\\n' > "$2/bin/llama-server"
    chmod +x "$2/bin/llama-server" ;;
  *) echo configured ;;
esac
""")
    _script(bin_dir / "c++", "exit 0\n")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    src = tmp_path / "src"
    src.mkdir()
    monkeypatch.setattr(build, "_fetch_sources", lambda step, work, report: src)
    events: list[tuple] = []
    binary = ensure_llama_server(lambda *e: events.append(e))
    assert binary == engine_dir() / "llama-server"
    assert llama_server_version(binary) == "1 (x)"
    stamp = json.loads((binary.parent / "build.json").read_text())
    assert stamp["llama_cpp_python"] == LLAMA_CPP_PYTHON_VERSION
    assert stamp["cmake_flags"] == list(CMAKE_FLAGS)
    assert stamp["opt_levels"] == opt_levels.plan()
    assert stamp["build_seconds"] >= 0
    assert ("compile", 1, 3) in events and ("compile", 3, 3) in events
    assert events[-1] == ("done", None, None)
    assert "bin/llama-server" in build.build_log_path().read_text()
    # and now it is current: no second build
    monkeypatch.setattr(build, "_build", lambda *a: pytest.fail("rebuilt"))
    assert ensure_llama_server() == binary


def test_progress_lines_are_parsed() -> None:
    assert build._NINJA_STEP.match("[45/206] Building CXX").groups() == ("45", "206")
    assert build._MAKE_STEP.match("[ 45%] Building CXX").group(1) == "45"
    assert build._NINJA_STEP.match("-- Configuring done") is None


def test_second_process_waits_for_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    order: list[str] = []
    held = threading.Event()

    def holder() -> None:
        with file_lock(lock):
            held.set()
            time.sleep(0.3)
            order.append("first done")

    t = threading.Thread(target=holder)
    t.start()
    held.wait(5)
    waited = []
    with file_lock(lock, on_wait=lambda: waited.append(True)):
        order.append("second in")
    t.join()
    assert waited == [True]
    assert order == ["first done", "second in"]


def test_version_parsing(tmp_path: Path) -> None:
    fake = _script(tmp_path / "ls", "echo 'version: 6123 (0a1b2c3)' >&2\necho 'built with cc' >&2\n")
    assert llama_server_version(fake) == "6123 (0a1b2c3)"
    pinned = _script(tmp_path / "pinned", "echo 'version: 0.5.0-dev (build 1, commit 0c1e570)'\n")
    assert llama_server_version(pinned) == "0.5.0-dev (build 1, commit 0c1e570)"
    silent = _script(tmp_path / "silent", "exit 3\n")
    with pytest.raises(EngineError):
        llama_server_version(silent)


def test_a_binary_built_with_another_optimisation_plan_is_rebuilt(cache: Path) -> None:
    binary = _install_fake_build()
    assert build._is_current(binary)
    info = json.loads((binary.parent / "build.json").read_text())
    del info["opt_levels"]  # an engine built before this plan (it had "light_targets" only)
    info["light_targets"] = {"targets": ["llama-common", "mtmd", "cpp-httplib"], "opt": "-O1"}
    (binary.parent / "build.json").write_text(json.dumps(info))
    assert not build._is_current(binary)


def test_a_configure_stopped_by_the_plan_names_the_plan() -> None:
    tail = ["-- Configuring incomplete, errors occurred!",
            "CMake Error at /x/infermeter-opt-levels.cmake:26 (message):",
            "  infermeter: src/llama-quant.cpp is not a source of llama; update",
            "  infermeter's opt_levels.py"]
    assert build._error_line(tail[1:] + tail[:1]).startswith("infermeter: src/llama-quant.cpp is not a source")
