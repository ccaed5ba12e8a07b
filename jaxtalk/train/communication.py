"""Communication in a compiled SPMD program, read from its HLO text: which collectives a
step runs and how many bytes each moves per device (benchmarks/latent_diffusion_memory.py,
the FSDP tests). Compiled, never executed: on simulated CPU devices it shows what a mesh
communicates, though XLA's CPU pipeline picks its own collectives (it forms no
reduce-scatter: sharded gradients are all-reduced).
"""

from __future__ import annotations

import math
import re

_COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
          "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}  # fmt: skip
_ARRAY = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")
_OPERAND = re.compile(r"%([\w.\-]+)")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")


def _shape_bytes(shape: str) -> int:
    """Bytes of an HLO shape: an array `f32[8,128]{1,0}` or a tuple of them."""
    return sum(
        _BYTES.get(dtype, 0) * math.prod(int(d) for d in dims.split(",") if d)
        for dtype, dims in _ARRAY.findall(shape)
    )


def _split_instruction(rest: str) -> tuple[str, str, str]:
    """`SHAPE OPCODE(OPERANDS), attrs` -> (shape, opcode, operands)."""
    if rest.startswith("("):  # a tuple shape: up to its matching parenthesis
        depth = 0
        for i, ch in enumerate(rest):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth == 0:
                break
        shape, rest = rest[: i + 1], rest[i + 1 :].lstrip()
    else:
        shape, _, rest = rest.partition(" ")
    opcode, _, operands = rest.partition("(")
    return shape, opcode, operands.split(")", 1)[0]


def collectives(compiled) -> dict[str, dict[str, int]]:
    """The communication in a compiled SPMD program, per collective kind (async -start/-done
    pairs counted once): how many there are and the bytes of the full tensors they move per
    device (the larger of result and operands: the gathered tensor of an all-gather, the
    unreduced one of a reduce-scatter). Each appears once in the program text: one inside a
    loop body (gradient accumulation) runs once per iteration."""
    shapes, found = {}, {}
    for line in compiled.as_text().splitlines():
        m = _INSTRUCTION.match(line)
        if not m:
            continue
        name, (shape, opcode, operands) = m.group(1), _split_instruction(m.group(2))
        shapes[name] = shape
        kind = opcode.removesuffix("-start")
        if kind not in _COLLECTIVES or opcode.endswith("-done"):
            continue
        operand_bytes = sum(_shape_bytes(shapes.get(o, "")) for o in _OPERAND.findall(operands))
        entry = found.setdefault(kind, {"count": 0, "bytes": 0})
        entry["count"] += 1
        entry["bytes"] += max(_shape_bytes(shape), operand_bytes)
    return found
