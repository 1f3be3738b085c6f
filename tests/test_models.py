"""Offline model resolution and preparation: what a user sees when a model is there or not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from o11ylab import cli, models

PYTHON = sys.executable


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models.build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-chat")


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("O11YLAB_MODEL_CACHE", str(cache))
    monkeypatch.delenv("LOCAL_MODEL_NAME", raising=False)
    monkeypatch.delenv("EMBEDDING_MODEL", raising=False)
    return cache


def test_tiny_model_builds_fast_and_loads_offline_with_a_chat_template(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    folder = models.build_tiny_model(tmp_path / "tiny")
    assert time.perf_counter() - started < 30  # ~2 s on a quiet machine
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<|im_start|>assistant\n")
    ids = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 4 or tokenizer.eos_token_id in out[0]


def test_a_local_folder_resolves_by_argument_and_by_env(
    tiny: Path, empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = models.resolve_chat_model(str(tiny))
    assert (ref.name, ref.path, ref.kind) == ("tiny-chat", tiny.resolve(), "chat")
    monkeypatch.setenv("LOCAL_MODEL_NAME", str(tiny))
    assert models.resolve_chat_model().path == tiny.resolve()


def test_a_missing_folder_says_how_to_fix_it(empty_cache: Path) -> None:
    with pytest.raises(models.ModelNotFoundError) as caught:
        models.resolve_chat_model(str(empty_cache / "nowhere"))
    message = str(caught.value)
    assert "LOCAL_MODEL_NAME" in message and "o11ylab models prepare" in message


def test_an_uncached_hub_id_fails_at_once_instead_of_retrying(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(empty_cache / "hf"))
    started = time.perf_counter()
    with pytest.raises(models.ModelNotFoundError, match="never downloads"):
        models.resolve_chat_model("someone/not-a-cached-model")
    assert time.perf_counter() - started < 10  # not the 47 s of hub retries


def test_a_folder_that_is_not_a_model_is_named_as_such(tmp_path: Path, empty_cache: Path) -> None:
    (tmp_path / "notes").mkdir()
    with pytest.raises(models.ModelNotFoundError, match=r"no config.json"):
        models.resolve_chat_model(str(tmp_path / "notes"))


def test_unprepared_default_says_how_to_prepare_it(empty_cache: Path) -> None:
    with pytest.raises(models.ModelNotFoundError, match="o11ylab models prepare"):
        models.resolve_chat_model(prepare=False)


def test_the_hub_id_of_the_default_falls_back_to_the_bundled_copy(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(empty_cache / "hf"))
    with pytest.raises(models.ModelNotFoundError, match="default chat model SmolLM2"):
        models.resolve_chat_model("HuggingFaceTB/SmolLM2-135M-Instruct", prepare=False)


def test_default_embedder_comes_from_the_bundled_wheel(empty_cache: Path) -> None:
    ref = models.resolve_embedding_model()
    assert ref.name == "all-MiniLM-L6-v2"
    assert (ref.path / "config.json").is_file()
    assert models.resolve_embedding_model("sentence-transformers/all-MiniLM-L6-v2").path == ref.path


def test_embedding_model_env_points_elsewhere(
    tmp_path: Path, empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBEDDING_MODEL", str(tmp_path / "missing-embedder"))
    with pytest.raises(models.ModelNotFoundError, match="EMBEDDING_MODEL"):
        models.resolve_embedding_model()


def test_a_folder_prepared_with_the_gguf_quantization_config_is_repaired(
    empty_cache: Path,
) -> None:
    folder = empty_cache / "SmolLM2-135M-Instruct"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"")
    gguf = {"dequantize": False, "gguf_file": "x.gguf", "quant_method": "gguf"}
    (folder / "config.json").write_text(
        json.dumps({"model_type": "llama", "quantization_config": gguf})
    )
    assert models.resolve_chat_model(prepare=False).path == folder
    assert json.loads((folder / "config.json").read_text()) == {"model_type": "llama"}
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]


def test_the_gguf_is_found_inside_the_installed_wheel() -> None:
    path = models.gguf_path()
    assert path.name.endswith(".gguf") and path.stat().st_size > 50_000_000


def test_models_list_shows_what_is_ready(
    tiny: Path,
    empty_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LOCAL_MODEL_NAME", str(tiny))
    assert cli.main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {row["name"]: row for row in rows}
    assert by_name["SmolLM2-135M-Instruct"]["status"].startswith("not prepared")
    assert by_name["all-MiniLM-L6-v2"]["status"] == "ready"
    assert by_name["tiny-chat"]["status"] == "selected by LOCAL_MODEL_NAME"
    assert cli.main(["models", "list"]) == 0
    table = capsys.readouterr().out
    assert "SmolLM2-135M-Instruct" in table and "o11ylab models prepare" in table


@pytest.mark.timeout(420)
def test_prepare_converts_the_bundled_gguf_once_and_it_answers(tmp_path: Path) -> None:
    """The real thing: ~40-60 s on 2 CPU cores. CI has the time; it is the only such test."""
    env = dict(os.environ, O11YLAB_MODEL_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1")
    env.pop("LOCAL_MODEL_NAME", None)
    done = subprocess.run(
        [PYTHON, "-m", "o11ylab", "models", "prepare"],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[1/4" in done.stdout and "ready in" in done.stdout
    assert "de-quantizing GGUF tensors" not in done.stderr, "no third-party bar in our step"
    folder = tmp_path / "cache" / "SmolLM2-135M-Instruct"
    assert models.is_prepared(folder)
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config, "a plain model: no GGUF quantizer at load"
    again = subprocess.run(
        [PYTHON, "-m", "o11ylab", "models", "prepare"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0 and "already prepared" in again.stdout

    from o11ylab.ai.local_model import LocalModel

    model = LocalModel(folder, verbose=False)
    answer = model.chat(
        [{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=8
    )
    assert answer.output_tokens > 0 and answer.text.strip()
    assert "paris" in answer.text.lower()


def test_model_settings_come_from_config(tmp_path: Path) -> None:
    from o11ylab.config import ConfigError, load_models

    settings = load_models(
        {
            "LOCAL_MODEL_NAME": str(tmp_path / "chat"),
            "O11YLAB_MODEL_CACHE": str(tmp_path / "cache"),
            "USE_GPU": "0",
            "GPU_DEVICE_ID": "1",
        }
    )
    assert settings.chat_model == str(tmp_path / "chat") and settings.embedding_model is None
    assert settings.cache_dir == tmp_path / "cache"
    assert (settings.use_gpu, settings.gpu_device_id) == (False, 1)
    assert load_models({}).use_gpu is None  # unset: CUDA when torch sees one
    with pytest.raises(ConfigError, match="GPU_DEVICE_ID='first'"):
        load_models({"GPU_DEVICE_ID": "first"})
