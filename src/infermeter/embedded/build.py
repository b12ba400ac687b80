"""Build llama.cpp's ``llama-server`` once, from a pinned PyPI source distribution.

The llama.cpp sources come from the ``llama-cpp-python`` sdist (pinned by
``LLAMA_CPP_PYTHON_VERSION``), fetched with ``pip download`` so that the usual pip
configuration (index, proxy, certificates) applies; only ``vendor/llama.cpp`` inside it
is used, nothing of llama-cpp-python itself is built.  cmake configures it with
``CMAKE_FLAGS`` (no web-UI or OpenSSL download, static libraries, no tests or
examples) and builds the single target ``llama-server`` (4.5-5.5 min on 2 cores, one
~15 MB binary, tuned for this machine's CPU: ``GGML_NATIVE`` is llama.cpp's default), with
the optimisation levels of :mod:`infermeter.embedded.opt_levels`.

The result lives in ``<cache_root>/engine/llama.cpp-<version>/llama-server`` with a
``build.json`` stamp; it is rebuilt only when the pinned version or the flags change.
The build runs in a scratch folder and is renamed into place under a file lock, so
two processes never build at once: the second waits, then reuses the binary.  The full
log stays in ``<cache_root>/engine/llama.cpp-<version>.build.log``.

``INFERMETER_LLAMA_SERVER=/path/to/llama-server`` skips all of this and uses that binary.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from infermeter.embedded.opt_levels import opt_levels_cmake, plan
from infermeter.embedded.paths import cache_root, ensure_dir, file_lock, replace_dir
from infermeter.errors import EngineError

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
CMAKE_FLAGS: tuple[str, ...] = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # else the build downloads the web UI
    "-DLLAMA_OPENSSL=OFF",  # else it may fetch/need OpenSSL; we serve plain HTTP on loopback
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary
    "-DLLAMA_BUILD_EXAMPLES=OFF",
)
BUILD_TARGET = "llama-server"
ENV_OVERRIDE = "INFERMETER_LLAMA_SERVER"

Progress = Callable[[str, "int | None", "int | None"], None]

_NINJA_STEP = re.compile(r"^\[(\d+)/(\d+)\]")
_MAKE_STEP = re.compile(r"^\[\s*(\d+)%\]")
_FIX_TOOLS = "apt-get install cmake g++ (or set INFERMETER_LLAMA_SERVER=/path/to/llama-server)"


def engine_dir() -> Path:
    """The folder the built binary and its stamp live in."""
    return cache_root() / "engine" / f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}"


def build_log_path() -> Path:
    return cache_root() / "engine" / f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}.build.log"


def ensure_llama_server(progress: Progress | None = None) -> Path:
    """The path of a usable ``llama-server``, building it first if needed.

    ``progress(phase, done, total)`` is called with phases ``wait`` (another process is
    building), ``download``, ``extract``, ``configure``, ``compile`` (done/total steps
    when known) and ``done``.
    """
    report = progress or _no_progress
    override = os.environ.get(ENV_OVERRIDE)
    if override:
        return _override_binary(override)
    binary = engine_dir() / BUILD_TARGET
    if _is_current(binary):
        return binary
    root = ensure_dir(cache_root() / "engine")
    with file_lock(root / f".llama.cpp-{LLAMA_CPP_PYTHON_VERSION}.lock",
                   on_wait=lambda: report("wait", None, None)):
        if _is_current(binary):  # built by the process we waited for
            report("done", None, None)
            return binary
        _build(root, report)
    report("done", None, None)
    return binary


def build_info(binary: Path) -> dict | None:
    """The ``build.json`` stamp next to a binary infermeter built, else None."""
    try:
        return json.loads((Path(binary).parent / "build.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def llama_server_version(binary: Path | str) -> str:
    """The version ``llama-server --version`` reports.

    The build from llama-cpp-python 0.3.36 prints ``version: 0.5.0-dev (build 1, commit
    0c1e570)``, giving ``"0.5.0-dev (build 1, commit 0c1e570)"``; upstream builds print
    ``version: 7843 (ab12cd3)``, giving ``"7843 (ab12cd3)"``.
    """
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                             timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineError(f"cannot run {str(binary)!r} --version: {exc}",
                          f"check the binary, or unset {ENV_OVERRIDE} to use the built one") from None
    text = (out.stdout or "") + "\n" + (out.stderr or "")
    match = re.search(r"version:\s*(\S+)\s*\(([^)]*)\)", text)
    if match:
        return f"{match.group(1)} ({match.group(2)})"
    match = re.search(r"version:\s*(\S+)", text)
    if match:
        return match.group(1)
    raise EngineError(f"{str(binary)!r} --version printed no version (exit {out.returncode})",
                      f"check that {str(binary)!r} is a llama-server binary")


# -- internals ---------------------------------------------------------------------------


def _no_progress(phase: str, done: int | None, total: int | None) -> None:
    pass


def _override_binary(value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_file():
        found = shutil.which(value)
        if found is None:
            raise EngineError(f"{ENV_OVERRIDE}={value!r} is not an existing file",
                              f"point {ENV_OVERRIDE} at a llama-server binary, or unset it to build one")
        path = Path(found)
    if not os.access(path, os.X_OK):
        raise EngineError(f"{ENV_OVERRIDE}={value!r} is not executable",
                          f"chmod +x {path}, or unset {ENV_OVERRIDE} to build one")
    return path.resolve()


def _stamp() -> dict:
    return {"llama_cpp_python": LLAMA_CPP_PYTHON_VERSION, "cmake_flags": list(CMAKE_FLAGS),
            "target": BUILD_TARGET, "opt_levels": plan()}


def _is_current(binary: Path) -> bool:
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return False
    info = build_info(binary)
    if info is None:
        return False
    return all(info.get(k) == v for k, v in _stamp().items())


class _Step:
    """Runs one build command, teeing its output into the log and parsing progress."""

    def __init__(self, log, report: Progress) -> None:
        self.log = log
        self.report = report
        self.tail: list[str] = []

    def run(self, phase: str, argv: list[str], cwd: Path | None = None,
            env: dict[str, str] | None = None) -> None:
        self.report(phase, None, None)
        self.log.write(f"\n$ {' '.join(argv)}\n")
        self.log.flush()
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1)
        except OSError as exc:
            raise _StepFailed(phase, f"cannot run {argv[0]}: {exc.strerror or exc}") from None
        assert proc.stdout is not None
        for line in proc.stdout:
            self.log.write(line)
            self.log.flush()  # so that `tail -f` on the log follows the build
            line = line.rstrip()
            self.tail = (self.tail + [line])[-40:]
            m = _NINJA_STEP.match(line)
            if m:
                self.report(phase, int(m.group(1)), int(m.group(2)))
                continue
            m = _MAKE_STEP.match(line)
            if m:
                self.report(phase, int(m.group(1)), 100)
        rc = proc.wait()
        self.log.flush()
        if rc != 0:
            raise _StepFailed(phase, _error_line(self.tail) or f"{argv[0]} exited with status {rc}")


class _StepFailed(Exception):
    def __init__(self, phase: str, reason: str) -> None:
        super().__init__(reason)
        self.phase = phase
        self.reason = reason


def _error_line(lines: list[str]) -> str:
    """The most telling line of a failed command's output tail."""
    for pattern in (r"No CMAKE_CXX?_COMPILER could be found", r"infermeter: ", r"\berror\b", r"ERROR", r"fatal"):
        for line in reversed(lines):
            if re.search(pattern, line, re.IGNORECASE if pattern.islower() else 0):
                return line.strip()[:300]
    for line in reversed(lines):
        if line.strip():
            return line.strip()[:300]
    return ""


def _fix_for(phase: str, reason: str, log_path: Path) -> str:
    if "COMPILER" in reason or "compiler" in reason.lower() or "cannot run cmake" in reason:
        return _FIX_TOOLS
    if phase == "download":
        return (f"check access to PyPI (pip config, proxy), see {log_path}; "
                f"or set {ENV_OVERRIDE}=/path/to/llama-server")
    return f"see {log_path}; install cmake and g++ (apt-get install cmake g++) or set {ENV_OVERRIDE}"


def _check_tools() -> None:
    if shutil.which("cmake") is None:
        raise EngineError("cmake is not installed, so llama-server cannot be built", _FIX_TOOLS)
    cxx = os.environ.get("CXX")
    if not (cxx and shutil.which(cxx)) and not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        raise EngineError("no C++ compiler found, so llama-server cannot be built", _FIX_TOOLS)


def _build(root: Path, report: Progress) -> None:
    _check_tools()
    for stale in root.glob(".work-*"):  # left by a killed build; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    log_path = build_log_path()
    start = time.time()
    work = Path(tempfile.mkdtemp(prefix=".work-", dir=root))
    try:
        with open(log_path, "w", encoding="utf-8") as log:
            log.write(f"infermeter: building llama-server from llama-cpp-python "
                      f"{LLAMA_CPP_PYTHON_VERSION} in {work}\n")
            step = _Step(log, report)
            try:
                src = _fetch_sources(step, work, report)
                build_dir = work / "build"
                generator = ["-G", "Ninja"] if shutil.which("ninja") else []
                # llama.cpp stamps `git rev-parse HEAD` of the source folder into --version; an
                # sdist has no .git, so stop git from finding an unrelated repo around the cache
                env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(work)}
                levels = work / "infermeter-opt-levels.cmake"
                levels.write_text(opt_levels_cmake(), encoding="utf-8")
                step.run("configure", ["cmake", "-S", str(src), "-B", str(build_dir), *generator, *CMAKE_FLAGS,
                                       f"-DCMAKE_PROJECT_INCLUDE={levels}"], env=env)
                jobs = str(os.cpu_count() or 1)
                step.run("compile", ["cmake", "--build", str(build_dir), "--target", BUILD_TARGET, "-j", jobs])
            except _StepFailed as exc:
                log.write(f"\ninfermeter: build failed during {exc.phase}: {exc.reason}\n")
                raise EngineError(
                    f"building llama-server failed during {exc.phase}: {exc.reason} (full log: {log_path})",
                    _fix_for(exc.phase, exc.reason, log_path),
                ) from None
            built = build_dir / "bin" / BUILD_TARGET
            if not built.is_file():
                raise EngineError(f"the llama-server build produced no binary at {built} (full log: {log_path})",
                                  f"see {log_path}")
            staged = work / "install"
            staged.mkdir()
            shutil.copy2(built, staged / BUILD_TARGET)
            seconds = round(time.time() - start, 1)
            stamp = {
                **_stamp(),
                "generator": "Ninja" if generator else "default",
                "jobs": int(jobs),
                "build_seconds": seconds,
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "python": sys.version.split()[0],
                "log": str(log_path),
            }
            (staged / "build.json").write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
            replace_dir(staged, engine_dir())
            log.write(f"\ninfermeter: built {engine_dir() / BUILD_TARGET} in {seconds} s\n")
    except OSError as exc:
        raise EngineError(f"building llama-server failed: {exc} (log: {log_path})",
                          "free disk space or set INFERMETER_CACHE to a writable folder") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _fetch_sources(step: _Step, work: Path, report: Progress) -> Path:
    """Download the pinned sdist and extract its ``vendor/llama.cpp``; returns that folder."""
    download = work / "download"
    download.mkdir()
    step.run("download", [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                          "--disable-pip-version-check", f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}",
                          "-d", str(download)])
    tarballs = sorted(download.glob("*.tar.gz"))
    if not tarballs:
        raise _StepFailed("download", "pip download produced no .tar.gz source distribution")
    report("extract", None, None)
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"
    dest = work / "src"
    try:
        with tarfile.open(tarballs[0], "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
            if not members:
                raise _StepFailed("extract", f"{tarballs[0].name} has no {prefix}")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.11.4
                tar.extractall(dest, members=members)
    except (tarfile.TarError, EOFError) as exc:
        raise _StepFailed("extract", f"cannot extract {tarballs[0].name}: {exc}") from None
    step.log.write(f"infermeter: extracted {len(members)} entries of {tarballs[0].name}\n")
    return dest / prefix.rstrip("/")
