"""Every registered structure compiles with torch.compile (inductor) inside GPT-2: a small model per structure
(width 48, where inductor once failed on a symbolic size) gives eager's loss and gradients. Under compile the
structures trace their plain-ops path (paths.uses_fast_path); BTT-MoE's routed experts run eager."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from scaling.config.compose import compose_run_config
from scaling.config.schema import ModelConfig
from scaling.data.interface import DataInfo
from scaling.mup.parametrization import build_parametrized_model
from scaling.structures import REGISTRY

VOCAB, CONTEXT = 64, 16
pytestmark = pytest.mark.usefixtures("one_thread")


def loss_and_grads(model, x, y) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    _, loss = model(x, y)
    loss.backward()
    return loss.detach(), {n.removeprefix("_orig_mod."): p.grad.clone()  # a compiled model's names carry the prefix
                           for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_gpt2_compiles_and_matches_eager(name):
    structure = OmegaConf.to_object(compose_run_config([f"structure={name}"]).structure)
    cfg = ModelConfig(family="gpt2", width=48, base_width=48, depth=1, head_dim=16, context=CONTEXT)
    torch.manual_seed(0)
    model, _ = build_parametrized_model(cfg, structure, DataInfo(kind="text", unit="token", vocab_size=VOCAB))
    with torch.no_grad():  # off the init (zero heads and out-projections would make every output equal)
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, y = torch.randint(0, VOCAB, (4, CONTEXT)), torch.randint(0, VOCAB, (4, CONTEXT))
    want_loss, want = loss_and_grads(model, x, y)
    torch._dynamo.reset()
    got_loss, got = loss_and_grads(torch.compile(model), x, y)
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-5, atol=1e-6)
    assert set(got) == set(want)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-4, atol=1e-5 * float(want[n].abs().max()),
                                   msg=lambda m: f"{n}: {m}")
