"""The two-core plan and core views a BTT, Monarch or Einsum layer hands to kernels.two_core_apply (for the kernel
tests)."""

from __future__ import annotations

import torch

from scaling.structures import StructuredLinear
from scaling.structures.btt import BlockTensorTrain, btt_cores, btt_plan
from scaling.structures.einsum import Einsum, einsum_cores
from scaling.structures.fastpath.two_core import TwoCorePlan
from scaling.structures.monarch import Monarch, monarch_plan


def plan_and_cores(layer: StructuredLinear) -> tuple[TwoCorePlan, torch.Tensor, torch.Tensor]:
    """The plan and (b, out, in) core views a two-core-plan structure's forward passes to two_core_apply."""
    if isinstance(layer, BlockTensorTrain):
        lay = layer.layout
        return btt_plan(lay.m1, lay.m0, lay.n0, lay.n1, lay.rank), *btt_cores(layer.W0, layer.W1, lay.rank)
    if isinstance(layer, Monarch):
        lay = layer.layout
        plan = monarch_plan(layer.d_in, layer.d_out, lay.blocks, lay.in_blk, lay.mid, lay.out_blk)
        return plan, layer.R.transpose(1, 2), layer.L.transpose(1, 2)
    assert isinstance(layer, Einsum)
    return layer.plan, *einsum_cores(layer.A, layer.B, layer.a_first)
