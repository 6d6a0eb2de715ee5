"""Which device runs, and in which precision: cuda, then mps, then cpu; bf16 autocast where it pays."""

from __future__ import annotations

import functools

import torch

from catdog.errors import UserError


def pick_device(name: str | None = None) -> torch.device:
    """cuda, then mps, then cpu; a named device must be available."""
    if name is None or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r}: not a device name (try cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name}: MPS is not available on this machine")
    return device


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic natively (AVX512-BF16 or AMX), through oneDNN."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def uses_bf16(device: torch.device, enabled: bool) -> bool:
    """bf16 autocast where it pays: on CUDA and on CPUs with native bf16 (emulated bf16 is slower
    than float32, so other CPUs train in float32)."""
    return enabled and (device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16()))


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast if `uses_bf16`, else a no-op (float32). Weights and optimizer stay float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(device, enabled))
