"""Communication in a compiled SPMD program, read from its HLO text: which collectives a
step runs, how many bytes each moves per device and over how many devices
(benchmarks/latent_diffusion_memory.py, benchmarks/scaling_projection.py, the FSDP tests).
Compiled, never executed: on simulated CPU devices it shows what a mesh communicates,
though XLA's CPU pipeline picks its own collectives (it forms no reduce-scatter: sharded
gradients are all-reduced).
"""

from __future__ import annotations

import dataclasses
import math
import re

_COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
          "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}  # fmt: skip
_ARRAY = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")
_OPERAND = re.compile(r"%([\w.\-]+)")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
# The three ways HLO writes a collective's device groups: over named mesh axes
# (`mesh['axis_0'=4,'axis_1'=2] ... {'axis_0'}`), as an iota (`[2,4]<=[8]`: 2 groups of 4)
# or listed (`{{0,1},{2,3}}`; `{}` is every device).
_MESH_GROUPS = re.compile(r"replica_groups=mesh\[([^\]]*)\][^{]*\{([^}]*)\}")
_IOTA_GROUPS = re.compile(r"replica_groups=\[\d+,(\d+)\]<=")
_LISTED_GROUPS = re.compile(r"replica_groups=\{\{([\d,]*)\}")


@dataclasses.dataclass(frozen=True)
class Collective:
    kind: str  # all-reduce, all-gather, reduce-scatter, all-to-all, collective-permute
    bytes: int  # the full tensor per device: the larger of result and operands
    group_size: int  # devices in each group; 0 = every device of the program
    operands: int = 1  # arrays it carries (a gradient all-reduce: one per parameter)


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


def _group_size(attributes: str) -> int:
    if m := _MESH_GROUPS.search(attributes):
        sizes = dict(re.findall(r"'([^']+)'=(\d+)", m.group(1)))
        return math.prod(int(sizes[a]) for a in re.findall(r"'([^']+)'", m.group(2)))
    if m := _IOTA_GROUPS.search(attributes):
        return int(m.group(1))
    if m := _LISTED_GROUPS.search(attributes):
        return len(m.group(1).split(","))
    return 0


def collective_ops(compiled) -> list[Collective]:
    """Every collective of a compiled SPMD program in program order (async -start/-done
    pairs once). Each appears once in the program text: one inside a loop body (gradient
    accumulation) runs once per iteration."""
    shapes, found = {}, []
    for line in compiled.as_text().splitlines():
        m = _INSTRUCTION.match(line)
        if not m:
            continue
        name, (shape, opcode, operands) = m.group(1), _split_instruction(m.group(2))
        shapes[name] = shape
        kind = opcode.removesuffix("-start")
        if kind not in _COLLECTIVES or opcode.endswith("-done"):
            continue
        names = _OPERAND.findall(operands)
        size = max(_shape_bytes(shape), sum(_shape_bytes(shapes.get(o, "")) for o in names))
        found.append(Collective(kind, size, _group_size(m.group(2)), max(1, len(names))))
    return found


def collectives(compiled) -> dict[str, dict[str, int]]:
    """The communication in a compiled SPMD program per collective kind: how many there are
    and the bytes of the full tensors they move per device (the gathered tensor of an
    all-gather, the unreduced one of a reduce-scatter)."""
    found = {}
    for op in collective_ops(compiled):
        entry = found.setdefault(op.kind, {"count": 0, "bytes": 0})
        entry["count"] += 1
        entry["bytes"] += op.bytes
    return found
