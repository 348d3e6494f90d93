"""Where a run computes, and in which precision: the device a name means, and the autocast context a
recipe's precision (``Recipe.precision``) means on it."""

from __future__ import annotations

from contextlib import nullcontext

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def cpu_has_native_bf16() -> bool:
    is_supported = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((is_supported and is_supported()) or (amx and amx()))


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype a recipe's precision means on ``device`` (None: plain fp32)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else None
    return None


def autocast(precision: str, device: torch.device):
    dtype = autocast_dtype(precision, device)
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
