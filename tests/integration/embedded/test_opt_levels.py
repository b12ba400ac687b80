"""The optimisation plan applied by real cmake to a small project shaped like llama.cpp.

Only cmake's configure step runs (no compiler output is needed): the compile commands it
writes show which optimisation level each file gets, including the unity-built model files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from infermeter.embedded import opt_levels

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("c++") is None,
                                reason="needs cmake and a C++ compiler")

MODELS = (*opt_levels.HOT_MODELS, "src/models/bert.cpp", "src/models/qwen2.cpp")
LIBRARY = ("src/llama-context.cpp", "src/llama-graph.cpp", *opt_levels.COLD_LLAMA_SOURCES)
SERVER = ("tools/server/server-context.cpp", "tools/server/server-tools.cpp", "tools/server/server-mcp.cpp")
SERVER_IMPL = ("tools/server/server.cpp", "tools/server/server-models.cpp")

_TOP = """\
cmake_minimum_required(VERSION 3.19)
project(fake CXX)
add_library(ggml-cpu STATIC ggml/ops.cpp)
add_library(llama-common STATIC common/arg.cpp)
add_library(mtmd STATIC tools/mtmd/clip.cpp)
add_library(cpp-httplib STATIC vendor/httplib.cpp)
add_subdirectory(src)
add_subdirectory(tools/server)
"""
_SRC = """\
file(GLOB MODELS "models/*.cpp")
add_library(llama STATIC {library} ${{MODELS}})
set_target_properties(llama PROPERTIES UNITY_BUILD ON UNITY_BUILD_BATCH_SIZE 16)
set_source_files_properties({library} PROPERTIES SKIP_UNITY_BUILD_INCLUSION ON)
"""
_SERVER = """\
add_library(server-context STATIC {server})
add_library(llama-server-impl STATIC {impl})
"""


def _project(root: Path, library=LIBRARY) -> Path:
    for rel in (*MODELS, *library, *SERVER, *SERVER_IMPL, "ggml/ops.cpp", "common/arg.cpp",
                "tools/mtmd/clip.cpp", "vendor/httplib.cpp"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("// empty\n")
    (root / "CMakeLists.txt").write_text(_TOP)
    (root / "src" / "CMakeLists.txt").write_text(
        _SRC.format(library=" ".join(p.removeprefix("src/") for p in library)))
    (root / "tools" / "server" / "CMakeLists.txt").write_text(_SERVER.format(
        server=" ".join(Path(p).name for p in SERVER), impl=" ".join(Path(p).name for p in SERVER_IMPL)))
    include = root / "levels.cmake"
    include.write_text(opt_levels.opt_levels_cmake())
    return include


def _configure(root: Path, include: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["cmake", "-S", str(root), "-B", str(root / "build"), "-DCMAKE_BUILD_TYPE=Release",
                           "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON", f"-DCMAKE_PROJECT_INCLUDE={include}"],
                          capture_output=True, text=True, timeout=120)


def _levels(root: Path) -> dict[str, str]:
    """Each compiled file (relative to the project; unity files by name) -> the last -O flag."""
    out = {}
    for entry in json.loads((root / "build" / "compile_commands.json").read_text()):
        flags = [a for a in entry["command"].split() if a.startswith("-O")]
        name = Path(entry["file"])
        key = name.name if "Unity" in name.parts else str(name.relative_to(root))
        out[key] = flags[-1]
    return out


def test_each_file_gets_its_planned_level(tmp_path: Path) -> None:
    proc = _configure(tmp_path, _project(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    levels = _levels(tmp_path)
    hot, light = opt_levels.HOT_OPT, opt_levels.LIGHT_OPT
    # the request path stays fully optimised
    for rel in ("ggml/ops.cpp", "src/llama-context.cpp", "src/llama-graph.cpp", *opt_levels.HOT_MODELS,
                "tools/server/server-context.cpp", "tools/server/server-tools.cpp", "tools/server/server-models.cpp"):
        assert levels[rel] == hot, rel
    # the light libraries, the cold library files and other architectures' graph builders do not
    for rel in ("common/arg.cpp", "tools/mtmd/clip.cpp", "vendor/httplib.cpp", *opt_levels.COLD_LLAMA_SOURCES):
        assert levels[rel] == light, rel
    # the other builders stay batched in a unity file (a per-file flag would have split them)
    unity = [k for k in levels if k.startswith("unity_")]
    assert unity and all(levels[k] == light for k in unity)
    assert "src/models/bert.cpp" not in levels and "src/models/qwen2.cpp" not in levels


def test_a_planned_file_missing_from_the_sources_stops_the_configure(tmp_path: Path) -> None:
    library = tuple(p for p in LIBRARY if p != "src/llama-quant.cpp")
    proc = _configure(tmp_path, _project(tmp_path, library))
    assert proc.returncode != 0
    assert "src/llama-quant.cpp is not a source of llama" in " ".join((proc.stdout + proc.stderr).split())
