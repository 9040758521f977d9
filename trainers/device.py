"""Where and in what precision a trainer computes: the device, autocast, and one-time notices.

Notices go through :mod:`logging` (logger ``trainers``), each once per process.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("trainers")

_said: set[str] = set()
# What resolve_device says when it falls back to the CPU.
CPU_NOTICE = "CUDA is not available; training on the CPU"


def silence(message: str) -> None:
    """Count ``message`` as said in this process: a runner that says it once itself (sweeper's
    progress header says where the trials run) keeps each worker from saying it again."""
    _said.add(message)


def say_once(message: str) -> None:
    """Log ``message`` (a warning of logger ``trainers``) the first time this process asks."""
    if message not in _said:
        _said.add(message)
        log.warning("trainer: %s", message)


def resolve_device(name: str) -> torch.device:
    """``auto`` → the CUDA device Ray (or the user) made visible, else the CPU.

    Says once per process, on stderr, when it falls back to the CPU.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cpu":
        say_once(CPU_NOTICE)
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (``None``: full fp32).

    bf16 where the device supports it, else fp16 on CUDA; fp16 on the CPU runs as bf16
    (torch's CPU autocast is made for bf16). Each substitution is said once.
    """
    if precision == "fp32":
        return None
    if device.type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            say_once("this GPU has no bf16; using fp16 with a gradient scaler")
            return torch.float16
        return torch.bfloat16 if precision == "bf16" else torch.float16
    if precision == "fp16":
        say_once("fp16 autocast is for CUDA; on the CPU this runs as bf16")
    return torch.bfloat16

