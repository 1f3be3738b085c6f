"""Which torch device and dtype a local model runs on (``USE_GPU``, ``GPU_DEVICE_ID``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ._errors import LocalModelError


def choose_device(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(torch device, why) from ``USE_GPU`` and ``GPU_DEVICE_ID``."""
    import torch

    env = os.environ if env is None else env
    raw = env.get("USE_GPU", "").strip().lower()
    if raw in ("0", "false", "no", "off"):
        return "cpu", "USE_GPU=0"
    if raw not in ("", "auto", "1", "true", "yes", "on"):
        raise LocalModelError(f"USE_GPU={raw!r} is not a yes/no value: use 1, 0 or leave it unset.")
    if not torch.cuda.is_available():
        why = (
            "USE_GPU is set but torch sees no CUDA device"
            if raw not in ("", "auto")
            else ("no CUDA device")
        )
        return "cpu", why
    count = torch.cuda.device_count()
    id_raw = env.get("GPU_DEVICE_ID", "0").strip() or "0"
    try:
        index = int(id_raw)
    except ValueError:
        raise LocalModelError(f"GPU_DEVICE_ID={id_raw!r} is not a whole number.") from None
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
