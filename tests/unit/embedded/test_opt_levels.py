"""The engine's optimisation plan, as data and as the cmake text that applies it."""

from __future__ import annotations

from infermeter.embedded import opt_levels
from infermeter.embedded.gguf import ARCHITECTURE
from infermeter.embedded.models import MODELS, PackagedModelSpec


def test_the_graph_builders_of_every_served_model_stay_fully_optimised() -> None:
    archs = {ARCHITECTURE} | {s.architecture for s in MODELS.values() if isinstance(s, PackagedModelSpec)}
    assert archs == {"llama", "gemma3"}
    for arch in archs:
        assert f"src/models/{arch}.cpp" in opt_levels.HOT_MODELS


def test_the_request_path_is_not_in_the_cold_lists() -> None:
    cold = set(opt_levels.COLD_LLAMA_SOURCES)
    for hot in ("src/llama-context.cpp", "src/llama-graph.cpp", "src/llama-batch.cpp", "src/llama-kv-cache.cpp",
                "src/llama-sampler.cpp", "src/llama-vocab.cpp", "src/unicode.cpp",
                "src/llama-kv-cache-iswa.cpp",  # Gemma 3's sliding-window cache
                "tools/server/server-context.cpp", "tools/server/server-task.cpp", "tools/server/server-http.cpp"):
        assert hot not in cold
    assert opt_levels.LIGHT_OPT != opt_levels.HOT_OPT


def test_the_include_defers_to_the_end_of_the_top_directory_and_leaves_ggml_alone() -> None:
    text = opt_levels.opt_levels_cmake()
    assert "cmake_language(DEFER DIRECTORY" in text
    assert "VERSION_LESS 3.19" in text  # older cmake: no plan, a plain release build
    for target in (*opt_levels.LIGHT_TARGETS, opt_levels.LLAMA_TARGET):
        assert target in text
    assert "@" not in text  # every placeholder filled
    assert "ggml" not in text and "server" not in text  # the kernels and the server stay at the release level


def test_the_plan_is_plain_data_for_the_stamp() -> None:
    plan = opt_levels.plan()
    assert plan["light_targets"] == list(opt_levels.LIGHT_TARGETS)
    assert plan["cold_library_sources"] == list(opt_levels.COLD_LLAMA_SOURCES)
    assert plan["hot_models"] == list(opt_levels.HOT_MODELS)


def test_the_comparison_include_lowers_only_the_light_libraries() -> None:
    text = opt_levels.opt_levels_cmake(library=False)
    assert "target_compile_options(${t} PRIVATE -O1)" in text and "llama-common" in text
    assert "src/models" not in text and opt_levels.HOT_OPT not in text
    assert text.rstrip().endswith("endif()") and "@" not in text
