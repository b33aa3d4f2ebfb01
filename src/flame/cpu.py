"""What the CPU can do: its model name and the vector flags that decide CPU inference speed.

bf16 matmuls are fast only on CPUs with native bf16 instructions (AVX512-BF16 or AMX); on
AVX2-only CPUs they are emulated and about 3x slower than fp32. `dtype: auto` asks
`native_bf16()`, and every benchmark prints `describe()` beside its numbers.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

# /proc/cpuinfo flag -> the name printed by describe()
FLAGS = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_bf16": "AVX512-BF16",
    "amx_bf16": "AMX-BF16",
}


@functools.cache
def cpu_model_and_flags(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first CPU in /proc/cpuinfo; (platform name, {}) elsewhere."""
    path = Path(cpuinfo)
    model, flags = "", None
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and flags is None:
                flags = frozenset(value.split())
            if model and flags is not None:
                break
    return model or platform.processor() or platform.machine(), flags or frozenset()


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX-BF16)."""
    if flags is None:
        flags = cpu_model_and_flags()[1]
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def describe() -> str:
    """One line: CPU model, the vector flags present and torch's kernel level."""
    model, flags = cpu_model_and_flags()
    have = [name for flag, name in FLAGS.items() if flag in flags]
    line = f"CPU: {model}; flags: {', '.join(have) or 'none of ' + ', '.join(FLAGS.values())}"
    try:
        import torch

        line += f"; torch kernels {torch.backends.cpu.get_cpu_capability()}"
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return line
