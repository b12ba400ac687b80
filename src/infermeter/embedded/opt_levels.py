"""Which parts of llama-server are compiled at full optimisation, and which are not.

Release builds compile everything at ``-O3``.  Much of the build's time goes into code a
served text model never runs, or runs once at start-up; that code is
compiled at ``LIGHT_OPT`` (about half the compile time per file), while everything on the
request path stays ``HOT_OPT``:

- ``LIGHT_TARGETS``, whole libraries: argument parsing, chat templates and JSON schemas
  (``llama-common``), the multimodal library a text model never calls (``mtmd``), the HTTP
  library (socket-bound).
- ``llama``, the model library: its 156 per-architecture graph builders are compiled in
  batches of 16 (llama.cpp's unity build), which a per-file flag would split up, so the
  library is compiled at ``LIGHT_OPT`` and each file a served model runs is raised back
  to ``HOT_OPT``: every non-builder source except ``COLD_LLAMA_SOURCES`` (quantizing,
  saving, loading, and the memory of other architectures), and ``HOT_MODELS``, the graph
  builders of the models infermeter serves (its generated llama models, the packaged
  Gemma 3).  A GGUF of another architecture run on this binary (the llama.cpp launch
  profile with a model path) builds its per-step graph in -O1 code; that cost is not
  measured.

ggml (the kernels), the server and the model library's decode, graph, batch, cache,
sampler and tokenizer code stay ``HOT_OPT``.  The server's router mode, built-in tools and
MCP client (``server-models.cpp``, ``server-tools.cpp``, ``server-mcp.cpp``) run only when
their flags are given, yet at -O1 they made README command 1's workload 3 % slower (8 of 10
alternating pairs): the linker keeps one copy of each template function the server's files
share, and it can be the -O1 one.  So they stay ``HOT_OPT``.  BENCHMARKS.md "Building the engine"
has the build time and the engine's speed with and without this plan.

The plan is handed to cmake as a project include (``CMAKE_PROJECT_INCLUDE``) that runs at
the end of the top-level CMakeLists, when every target exists.  A named target or file that
the pinned llama.cpp lacks stops the configure with a message, so a version bump revisits
the plan instead of silently compiling new code at the wrong level.
"""

from __future__ import annotations

LIGHT_OPT = "-O1"
HOT_OPT = "-O3"
LIGHT_TARGETS: tuple[str, ...] = ("llama-common", "mtmd", "cpp-httplib")
LLAMA_TARGET = "llama"
# the generated models (llama) and the packaged gemma3-270m (gemma3)
HOT_MODELS: tuple[str, ...] = ("src/models/llama.cpp", "src/models/gemma3.cpp")
COLD_LLAMA_SOURCES: tuple[str, ...] = (
    "src/llama-quant.cpp",  # llama-quantize's code
    "src/llama-model-saver.cpp",  # writing GGUF files
    "src/llama-model-loader.cpp",  # reading them, once at start-up
    # memory of other architectures: DeepSeek sparse attention and V4, recurrent, hybrid
    "src/llama-kv-cache-dsa.cpp",
    "src/llama-kv-cache-dsa-iswa.cpp",
    "src/llama-kv-cache-dsv4.cpp",
    "src/llama-kv-cache-msa.cpp",
    "src/llama-memory-recurrent.cpp",
    "src/llama-memory-hybrid.cpp",
    "src/llama-memory-hybrid-iswa.cpp",
    "src/llama-memory-hybrid-idx.cpp",
)
_TEMPLATE = """\
# infermeter: optimisation levels (infermeter/embedded/opt_levels.py)
if(CMAKE_VERSION VERSION_LESS 3.19)
  message(STATUS "infermeter: cmake ${CMAKE_VERSION} < 3.19, so everything is compiled at the release level")
  return()
endif()
function(_infermeter_target target)
  if(NOT TARGET ${target})
    message(FATAL_ERROR "infermeter: llama.cpp has no target ${target}; update infermeter's opt_levels.py")
  endif()
endfunction()
function(_infermeter_sources target out)
  _infermeter_target(${target})
  get_target_property(srcs ${target} SOURCES)
  get_target_property(dir ${target} SOURCE_DIR)
  set(abs_list "")
  set(rel_list "")
  foreach(s IN LISTS srcs)
    get_filename_component(abs "${s}" ABSOLUTE BASE_DIR "${dir}")
    file(RELATIVE_PATH rel "${CMAKE_SOURCE_DIR}" "${abs}")
    list(APPEND abs_list "${abs}")
    list(APPEND rel_list "${rel}")
  endforeach()
  set(${out}_abs "${abs_list}" PARENT_SCOPE)
  set(${out}_rel "${rel_list}" PARENT_SCOPE)
endfunction()
function(_infermeter_require target present)
  foreach(f IN LISTS ARGN)
    if(NOT f IN_LIST present)
      message(FATAL_ERROR "infermeter: ${f} is not a source of ${target}; update infermeter's opt_levels.py")
    endif()
  endforeach()
endfunction()
function(_infermeter_opt_levels)
  get_property(done GLOBAL PROPERTY _INFERMETER_OPT_DONE)
  if(done)
    return()
  endif()
  set_property(GLOBAL PROPERTY _INFERMETER_OPT_DONE TRUE)
  foreach(t @LIGHT_TARGETS@)
    _infermeter_target(${t})
    target_compile_options(${t} PRIVATE @LIGHT@)
  endforeach()
  set(cold @COLD_LLAMA@)
  set(hot_models @HOT_MODELS@)
  _infermeter_sources(@LLAMA@ lib)
  _infermeter_require(@LLAMA@ "${lib_rel}" ${cold} ${hot_models})
  target_compile_options(@LLAMA@ PRIVATE @LIGHT@)
  foreach(abs rel IN ZIP_LISTS lib_abs lib_rel)
    if(NOT rel MATCHES "\\\\.(c|cc|cpp|cxx)$")
      continue()
    endif()
    if(rel IN_LIST hot_models OR (NOT rel MATCHES "^src/models/" AND NOT rel IN_LIST cold))
      set_source_files_properties("${abs}" TARGET_DIRECTORY @LLAMA@ PROPERTIES COMPILE_OPTIONS @HOT@)
    endif()
  endforeach()
endfunction()
if(CMAKE_CURRENT_SOURCE_DIR STREQUAL CMAKE_SOURCE_DIR)
  cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _infermeter_opt_levels)
endif()
"""


def plan() -> dict:
    """The plan as data, for the build stamp: a change of plan rebuilds the engine."""
    return {"light_opt": LIGHT_OPT, "hot_opt": HOT_OPT, "light_targets": list(LIGHT_TARGETS),
            "light_library": LLAMA_TARGET, "hot_models": list(HOT_MODELS),
            "cold_library_sources": list(COLD_LLAMA_SOURCES)}


def opt_levels_cmake(library: bool = True) -> str:
    """The cmake project include that applies the plan.

    ``library=False`` leaves the model library at the release level (only the light
    libraries are lowered): the plan before the library's part, for comparisons
    (benchmarks/engine_opt_levels.py).
    """
    text = _TEMPLATE
    if not library:
        start = text.index("  set(cold @COLD_LLAMA@)")
        text = text[:start] + text[text.index("endfunction()\nif(CMAKE_CURRENT_SOURCE_DIR"):]
    return (text.replace("@LIGHT_TARGETS@", " ".join(LIGHT_TARGETS))
            .replace("@COLD_LLAMA@", " ".join(COLD_LLAMA_SOURCES))
            .replace("@HOT_MODELS@", " ".join(HOT_MODELS))
            .replace("@LLAMA@", LLAMA_TARGET)
            .replace("@LIGHT@", LIGHT_OPT).replace("@HOT@", HOT_OPT))
