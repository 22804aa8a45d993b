"""The native offset-table GEMM, a C extension (csrc/offset_gemm.c) behind the structured layers' CPU fast path.

`pip install` builds it as the optional extension `scaling.structures.fastpath._offset_gemm` (x86-64 with a C compiler;
elsewhere, or if the build fails, it is skipped). It is loaded with ctypes and used only where `available()`:
the library loaded and this CPU has AVX2 and FMA (SCALING_NATIVE=0 switches it off through paths.DEFAULT_POLICY).
Its micro-kernel is AVX-512 where the CPU has AVX-512F (SCALING_NATIVE_AVX512=0, read when the library loads,
keeps the AVX2 one), else AVX2; `vector_bits()` says which runs.
Otherwise the structures run their PyTorch batched-GEMM path (bmm_schedule.py), which the tests also cover.

One `Gemm` is, for batch entries b, rows m, columns n < N and terms k:

    C[c_b[b] + c_m[m] + n] (+)= sum_k A[a_b[b] + a_m[m] + a_k[k]] * B[b_b[b] + b_k[k] + n]

so A is read through any offsets, while B and C need unit stride along n. `chain` runs several GEMMs over the
same tokens tile by tile (one axis of each counts tokens), so intermediates stay in cache between them; an
intermediate can live in a per-thread scratch of one tile's rows (`tile_steps`), so it never reaches memory. Every
offset is checked against the tensors' sizes before the call: a wrong table raises instead of touching memory
outside them. Tables are `Offsets`, which know their smallest and largest entry, so that check costs no pass
over them; `steps` and `pairs` are cached, so a layer called again with the same token count builds none.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
from dataclasses import dataclass

import torch

_INT64 = ctypes.c_int64
_PTR = ctypes.c_void_p


@dataclass(frozen=True, eq=False)
class Offsets:
    """An offset table (1-D, contiguous int64, owned: never changed) and its smallest and largest entry.
    Build with `offsets`, `steps` or `pairs`. Compared and hashed by identity, so caches can key on it."""

    table: torch.Tensor
    low: int
    high: int

    def __len__(self) -> int:
        return self.table.numel()


def offsets(values: torch.Tensor) -> Offsets:
    """An owned copy of an integer table, flattened, with its span (one min and max, here, once)."""
    table = values.reshape(-1).to(torch.int64, memory_format=torch.contiguous_format, copy=True)
    if table.numel() == 0:
        return Offsets(table, 0, 0)
    return Offsets(table, int(table.min()), int(table.max()))


@functools.lru_cache(maxsize=256)
def steps(count: int, stride: int) -> Offsets:
    """The offset table 0, stride, 2 stride, ... (count entries)."""
    last = max(count - 1, 0) * stride
    return Offsets(torch.arange(count, dtype=torch.int64) * stride, min(0, last), max(0, last))


@functools.lru_cache(maxsize=256)
def tile_steps(count: int, tile: int, stride: int) -> Offsets:
    """Rows of `count` tokens in a scratch of `tile` rows: (i mod tile) * stride. A chain of that tile visits tiles
    starting at multiples of `tile`, so each tile's tokens use rows 0..tile-1 (private to each thread)."""
    rows = min(count, tile)
    table = (torch.arange(count, dtype=torch.int64) % tile) * stride
    return Offsets(table, 0, max(rows - 1, 0) * stride)


@functools.lru_cache(maxsize=64)  # a table can be tokens x carried entries: a few MB each at most
def pairs(outer: Offsets, inner: Offsets) -> Offsets:
    """The offset table outer[i] + inner[j] for every (i, j), i outer: two nested axes as one."""
    table = (outer.table[:, None] + inner.table[None, :]).reshape(-1)
    if table.numel() == 0:
        return Offsets(table, 0, 0)
    return Offsets(table, outer.low + inner.low, outer.high + inner.high)


@dataclass
class Gemm:
    """One offset GEMM (module docstring). In a chain, `terms_per_token` = 0 means the rows are the tokens, else
    the terms are (token, carried) pairs, that many per token. `private` means C is (threads, ...), one per thread:
    accumulators summed by the caller (a chained GEMM summing over tokens needs them), or a tile's scratch
    (tile_steps rows) that a later GEMM of the chain reads as A with `private_a`."""

    A: torch.Tensor
    a_b: Offsets
    a_m: Offsets
    a_k: Offsets
    B: torch.Tensor
    b_b: Offsets
    b_k: Offsets
    C: torch.Tensor
    c_b: Offsets
    c_m: Offsets
    n: int
    accumulate: bool = False
    terms_per_token: int = 0
    private: bool = False
    private_a: bool = False


class _ChainOp(ctypes.Structure):
    _fields_ = [(name, _INT64) for name in ("nb", "M", "N", "K")] + [
        (name, _PTR) for name in ("A", "a_b", "a_m", "a_k", "B", "b_b", "b_k", "C", "c_b", "c_m")
    ] + [(name, _INT64) for name in ("accumulate", "terms_per_token", "private_stride", "a_private_stride")]


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The loaded extension, or None when it was not built or this CPU cannot run it."""
    spec = importlib.util.find_spec("scaling.structures.fastpath._offset_gemm")
    if spec is None or spec.origin is None:
        return None
    lib = ctypes.CDLL(spec.origin)
    if not lib.offset_gemm_supported():
        return None
    lib.offset_gemm_vector_bits.restype = ctypes.c_int
    lib.offset_gemm.argtypes = [_INT64] * 4 + [_PTR] * 10 + [ctypes.c_int, ctypes.c_int]
    lib.offset_gemm.restype = ctypes.c_int
    lib.offset_gemm_chain.argtypes = [_INT64, ctypes.POINTER(_ChainOp), _INT64, _INT64, ctypes.c_int]
    lib.offset_gemm_chain.restype = ctypes.c_int
    lib.offset_gemm_row_dots.argtypes = [_INT64, _INT64, _PTR, _PTR, _PTR, ctypes.c_int]
    lib.offset_gemm_row_dots.restype = ctypes.c_int
    lib.offset_gemm_combine.argtypes = [_INT64] * 3 + [_PTR] * 4 + [ctypes.c_int]
    lib.offset_gemm_combine.restype = ctypes.c_int
    return lib


def available() -> bool:
    """Whether the native GEMM can run here (built, and this CPU has AVX2+FMA)."""
    return _library() is not None


def vector_bits() -> int:
    """512 when the AVX-512 micro-kernel runs, 256 for the AVX2 one (the extension must be available)."""
    return _require().offset_gemm_vector_bits()


def _require() -> ctypes.CDLL:
    lib = _library()
    if lib is None:
        raise RuntimeError("the native offset GEMM is not available here; check native.available() first")
    return lib


def row_dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_c a[r, c] b[r, c] per row of two (N, d) float32 matrices, in one pass over both (the extension's loop;
    torch's vecdot wrote the products out and read them back to sum them)."""
    a, b = a.contiguous(), b.contiguous()
    out = a.new_empty(a.shape[0])
    _require().offset_gemm_row_dots(a.shape[0], a.shape[1], a.data_ptr(), b.data_ptr(), out.data_ptr(),
                                    torch.get_num_threads())
    return out


def combine(rows: torch.Tensor, slots: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """out[n] = sum_j weights[s] rows[s] over the slots s = slots[n, j] (weights 1 when None): float32 rows (S, d),
    int64 slots (N, k) indexing them, float32 weights (S,); each out row written once, in one pass."""
    rows, slots = rows.contiguous(), slots.contiguous()
    out = rows.new_empty(slots.shape[0], rows.shape[1])
    _require().offset_gemm_combine(slots.shape[0], slots.shape[1], rows.shape[1], rows.data_ptr(), slots.data_ptr(),
                                   0 if weights is None else weights.contiguous().data_ptr(), out.data_ptr(),
                                   torch.get_num_threads())
    return out


def _check_operand(name: str, t: torch.Tensor, size: int, width: int, *tables: Offsets) -> None:
    """t is a contiguous float32 CPU tensor and every offset sum (+ width) stays inside its first `size` floats."""
    if t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous():
        raise ValueError(f"offset gemm: {name} must be a contiguous float32 CPU tensor, got {t.dtype} on {t.device}")
    if min(map(len, tables)) == 0:
        return  # nothing is addressed
    low = sum(o.low for o in tables)
    high = sum(o.high for o in tables) + width
    if low < 0 or high > size:
        raise ValueError(f"offset gemm: {name}'s offsets reach [{low}, {high}) outside its {size} floats")


def _per_thread_size(name: str, t: torch.Tensor, private: bool, threads: int) -> int:
    """The floats each thread may address in t: all of them, or, private, one slice of its first axis."""
    if not private:
        return t.numel()
    if t.dim() == 0 or t.shape[0] < threads:
        raise ValueError(f"offset gemm: private {name} needs one slice per thread ({threads}), "
                         f"got shape {tuple(t.shape)}")
    return t[0].numel()


def _validate(op: Gemm, threads: int) -> tuple[int, int]:
    """Checks op's shapes and bounds; returns A's and C's per-thread strides (0 where not private)."""
    nb, m, k = len(op.a_b), len(op.a_m), len(op.a_k)
    if not (len(op.b_b) == len(op.c_b) == nb and len(op.c_m) == m and len(op.b_k) == k):
        raise ValueError(f"offset gemm: table sizes disagree (batch {nb}/{len(op.b_b)}/{len(op.c_b)}, "
                         f"rows {m}/{len(op.c_m)}, terms {k}/{len(op.b_k)})")
    a_size = _per_thread_size("A", op.A, op.private_a, threads)
    c_size = _per_thread_size("C", op.C, op.private, threads)
    _check_operand("A", op.A, a_size, 1, op.a_b, op.a_m, op.a_k)
    _check_operand("B", op.B, op.B.numel(), op.n, op.b_b, op.b_k)
    _check_operand("C", op.C, c_size, op.n, op.c_b, op.c_m)
    return a_size if op.private_a else 0, c_size if op.private else 0


def _sizes_and_pointers(op: Gemm) -> list[int]:
    """(nb, M, N, K) and the addresses of the operands and tables, in the C functions' argument order."""
    tables = [op.a_b, op.a_m, op.a_k, op.b_b, op.b_k, op.c_b, op.c_m]
    a_b, a_m, a_k, b_b, b_k, c_b, c_m = (o.table.data_ptr() for o in tables)
    return [len(op.a_b), len(op.a_m), op.n, len(op.a_k),
            op.A.data_ptr(), a_b, a_m, a_k, op.B.data_ptr(), b_b, b_k, op.C.data_ptr(), c_b, c_m]


def _empty(op: Gemm) -> bool:
    return min(len(op.a_b), len(op.a_m), len(op.a_k), op.n) == 0


def gemm(op: Gemm) -> torch.Tensor:
    """Runs one GEMM on torch.get_num_threads() threads (by rows when there are many, else by batch entries:
    C of different batch entries must not overlap); returns op.C. With no terms C is left as it is."""
    lib = _require()
    if op.private or op.private_a or op.terms_per_token:
        raise ValueError("offset gemm: private operands and terms_per_token belong to chain()")
    _validate(op, 1)
    if not _empty(op):
        lib.offset_gemm(*_sizes_and_pointers(op), int(op.accumulate), torch.get_num_threads())
    return op.C


def chain(ops: list[Gemm], tokens: int, tile: int) -> None:
    """Runs `ops` in order on each tile of `tile` tokens, threads taking runs of tiles (module docstring).

    A GEMM whose rows are the tokens must have tokens rows; one summing over tokens, tokens * terms_per_token
    terms and a private C with torch.get_num_threads() accumulators. Private scratch passed between GEMMs must be
    addressed by tile_steps tables of this `tile`.
    """
    lib = _require()
    threads = torch.get_num_threads()
    structs = []
    for i, op in enumerate(ops):
        counted = len(op.a_m) if op.terms_per_token == 0 else len(op.a_k) // op.terms_per_token
        if counted != tokens or (op.terms_per_token and len(op.a_k) != tokens * op.terms_per_token):
            raise ValueError(f"chain: GEMM {i} covers {counted} tokens, the chain runs {tokens}")
        if op.terms_per_token and not op.private:
            raise ValueError(f"chain: GEMM {i} sums over tokens and needs private accumulators (private=True)")
        a_stride, c_stride = _validate(op, threads)
        if _empty(op):
            continue
        structs.append(_ChainOp(*_sizes_and_pointers(op), int(op.accumulate), op.terms_per_token, c_stride, a_stride))
    if structs and tokens > 0:
        array = (_ChainOp * len(structs))(*structs)
        if lib.offset_gemm_chain(len(structs), array, tokens, tile, threads) == -2:
            raise RuntimeError("chain: a GEMM summing over tokens had no private accumulators")
