"""Which torch device and dtype a local model runs on (``USE_GPU``, ``GPU_DEVICE_ID``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from ...config import ConfigError, ModelsSettings, load_models
from ._errors import LocalModelError


def _settings(env: Mapping[str, str] | None = None) -> ModelsSettings:
    """The models section of o11ylab's settings; a value it cannot use is a LocalModelError
    here, as it has always been for the device."""
    try:
        return load_models(env)
    except ConfigError as exc:
        raise LocalModelError(str(exc)) from None


def choose_device(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(torch device, why) from ``USE_GPU`` and ``GPU_DEVICE_ID`` (``env``: default os.environ)."""
    settings = _settings(env)
    if settings.use_gpu is False:
        return "cpu", "USE_GPU=0"
    import torch

    if not torch.cuda.is_available():
        why = (
            "USE_GPU is set but torch sees no CUDA device" if settings.use_gpu else "no CUDA device"
        )
        return "cpu", why
    count = torch.cuda.device_count()
    index = settings.gpu_device_id
    if not 0 <= index < count:
        raise LocalModelError(
            f"GPU_DEVICE_ID={index} but torch sees {count} CUDA device(s): use 0..{count - 1}."
        )
    return f"cuda:{index}", f"{torch.cuda.get_device_name(index)}"


def _default_dtype(device: str) -> Any:
    import torch

    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32  # bf16 matmuls are slow on most CPUs


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """No "Loading weights 100% 272/272" bar in the user's cell: o11ylab says one line when a
    model is loaded. The bar's switch is global in transformers, so it is put back after."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
