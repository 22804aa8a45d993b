"""Structure-aware muP rules, init and optimiser groups (scaling.mup.parametrization)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scaling.config.schema import ModelConfig, StructureConfig
from scaling.data.interface import DataInfo
from scaling.models import ModelConfigError
from scaling.mup.parametrization import (
    ParamRule,
    apply_init,
    build_parametrized_model,
    make_optimizer,
    param_rules,
)
from scaling.structures import StructureError, build_linear, spectral_std

DENSE = StructureConfig(name="dense")


class TinyNet(nn.Module):
    """Embedding -> input layer -> residual FFN (up, down) -> LayerNorm -> head, every map a StructuredLinear."""

    def __init__(self, width: int, hidden: StructureConfig = DENSE, vocab: int = 11, d_x: int = 6, ffn: int = 4):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_x)
        self.inp = self._linear(DENSE, d_x, width, "input")
        self.up = self._linear(hidden, width, ffn * width, "ffn_up", bias=True)
        self.down = self._linear(hidden, ffn * width, width, "ffn_down")
        self.norm = nn.LayerNorm(width)
        self.head = self._linear(DENSE, width, 3, "head")

    @staticmethod
    def _linear(cfg: StructureConfig, d_in: int, d_out: int, role: str, bias: bool = False) -> nn.Module:
        layer = build_linear(cfg, d_in, d_out, bias)
        layer.role = role
        return layer

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.inp(self.embed(tokens))
        h = h + self.down(torch.relu(self.up(h)))
        return self.head(self.norm(h))


def test_dense_mup_rules_scale_hidden_and_readout_lr_with_width():
    model, base = TinyNet(64), TinyNet(16)
    rules = param_rules(model, base, "structure_aware")
    assert set(rules) == {n for n, _ in model.named_parameters()}
    # Adam muP: lr ~ d_in_base / d_in for maps whose fan-in grows; the input layer's fan-in (6) is fixed.
    assert rules["inp.weight"] == ParamRule(spectral_std(6, 64), 1.0, True)
    assert rules["up.weight"] == ParamRule(spectral_std(64, 256), 16 / 64, True)
    assert rules["down.weight"] == ParamRule(0.0, 64 / 256, True)  # residual out-projection starts at zero
    assert rules["head.weight"] == ParamRule(0.0, 16 / 64, True)  # readout starts at zero
    assert rules["embed.weight"] == ParamRule(0.02, 1.0, True)
    for vec in ("up.bias", "norm.weight", "norm.bias"):
        assert rules[vec] == ParamRule(None, 1.0, False)
    # Dense layers are the n_f = 1 case, so naive and structure-aware agree on them.
    assert param_rules(model, base, "naive") == rules


def test_standard_mode_has_no_width_scaling():
    rules = param_rules(TinyNet(64), TinyNet(16), "standard")
    assert rules["up.weight"] == ParamRule(64**-0.5, 1.0, True)
    assert rules["inp.weight"] == ParamRule(6**-0.5, 1.0, True)
    assert rules["down.weight"].init_std == 0.0 and rules["head.weight"].init_std == 0.0
    assert {r.lr_mult for r in rules.values()} == {1.0}


def test_unknown_mode_names_the_field_and_choices():
    with pytest.raises(ValueError, match=r"model\.parametrization='mup'.*structure_aware.*naive.*standard"):
        param_rules(TinyNet(32), TinyNet(16), "mup")


def test_base_model_of_another_architecture_is_rejected():
    class NoHead(TinyNet):
        def __init__(self, width: int):
            super().__init__(width)
            self.head = nn.Identity()

    with pytest.raises(ValueError, match=r"'head'.*base model.*model\.base_width"):
        param_rules(TinyNet(32), NoHead(16), "structure_aware")


def test_apply_init_draws_each_parameter_from_its_rule():
    torch.manual_seed(0)
    model = TinyNet(128, vocab=500)
    with torch.no_grad():
        model.norm.weight.fill_(3.0)  # a None rule must leave the module's own values alone
    rules = param_rules(model, TinyNet(16, vocab=500), "structure_aware")
    apply_init(model, rules)
    up = model.up.weight
    assert up.std().item() == pytest.approx(spectral_std(128, 512), rel=0.02)
    assert up.mean().abs().item() < 0.05 * spectral_std(128, 512)
    assert model.embed.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.count_nonzero(model.down.weight) == 0 and torch.count_nonzero(model.head.weight) == 0
    assert torch.all(model.norm.weight == 3.0)


def test_apply_init_needs_a_rule_for_every_parameter():
    model = TinyNet(32)
    rules = param_rules(model, TinyNet(16), "structure_aware")
    del rules["up.bias"]
    with pytest.raises(KeyError, match="up.bias"):
        apply_init(model, rules)


def test_optimizer_groups_by_rule_and_steps_each_group_at_its_own_lr():
    torch.manual_seed(0)
    model, base = TinyNet(64), TinyNet(16)
    rules = param_rules(model, base, "structure_aware")
    apply_init(model, rules)
    with torch.no_grad():  # zero-init layers would block every gradient below them
        model.head.weight.normal_(0.0, 0.1)
        model.down.weight.normal_(0.0, 0.1)
    lr, wd = 1e-2, 0.1
    opt = make_optimizer(model, rules, lr=lr, betas=(0.9, 0.99), weight_decay=wd)
    pairs = {(r.lr_mult, r.weight_decay) for r in rules.values()}
    assert len(opt.param_groups) == len(pairs)
    seen = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())
    for group in opt.param_groups:
        assert group["lr"] == pytest.approx(lr * group["lr_mult"])
        is_matrix = group["params"][0].ndim >= 2
        assert group["weight_decay"] == (wd if is_matrix else 0.0)
        assert all((p.ndim >= 2) == is_matrix for p in group["params"])

    # Adam's first step moves every coordinate with a nonzero gradient by ~lr * lr_mult (plus decoupled decay).
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = model(torch.randint(0, 11, (32, 5))).square().mean()
    loss.backward()
    opt.step()
    for name, p in model.named_parameters():
        rule = rules[name]
        decayed = before[name] * (1 - lr * rule.lr_mult * (wd if rule.weight_decay else 0.0))
        step = (p.detach() - decayed).abs()
        moved = p.grad.abs() > 1e-4  # Adam step = lr * g / (|g| + eps), eps = 1e-8
        assert moved.any(), name
        torch.testing.assert_close(step[moved], torch.full_like(step[moved], lr * rule.lr_mult), rtol=1e-3, atol=0)


def test_optimizer_skips_frozen_parameters():
    model = TinyNet(32)
    rules = param_rules(model, TinyNet(16), "structure_aware")
    model.embed.weight.requires_grad_(False)
    opt = make_optimizer(model, rules, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
    assert all(p is not model.embed.weight for g in opt.param_groups for p in g["params"])
    trained = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert trained == sum(p.numel() for p in model.parameters()) - model.embed.weight.numel()


def test_structure_aware_low_rank_treats_each_factor_as_a_dense_layer():
    low_rank = StructureConfig(name="low_rank", rank_frac=0.25)
    model, base = TinyNet(64, hidden=low_rank), TinyNet(16, hidden=low_rank)
    rules = param_rules(model, base, "structure_aware")
    # up: 64 -> 256 through rank 16; U has fan-in 64, V fan-in 16; lr_f = d_in_base / (n_f * fan_in_f).
    assert rules["up.U"] == ParamRule(spectral_std(64, 16), 16 / (2 * 64), True)
    assert rules["up.V"] == ParamRule(spectral_std(16, 256), 16 / (2 * 16), True)
    # down (ffn_down): 256 -> 64, rank 16; only the last factor V starts at zero.
    assert rules["down.U"] == ParamRule(spectral_std(256, 16), 64 / (2 * 256), True)
    assert rules["down.V"] == ParamRule(0.0, 64 / (2 * 16), True)
    naive = param_rules(model, base, "naive")
    assert naive["up.U"] == ParamRule(spectral_std(64, 16), 16 / 64, True)
    assert naive["up.V"] == ParamRule(spectral_std(16, 256), 16 / 64, True)
    assert naive["down.V"] == ParamRule(0.0, 64 / 256, True)
    standard = param_rules(model, base, "standard")
    assert standard["up.V"] == ParamRule(16**-0.5, 1.0, True)
    assert standard["down.V"] == ParamRule(0.0, 1.0, True)


TEXT = DataInfo(kind="text", unit="token", vocab_size=64)
IMAGE = DataInfo(kind="image", unit="example", input_shape=(3, 8, 8), num_classes=10)
TEACHER = DataInfo(kind="teacher", unit="example", input_shape=(8,), output_dim=1, loss="mse")


def test_build_parametrized_mlp_gives_btt_factors_their_own_fan_in():
    cfg = ModelConfig(family="mlp", width=256, base_width=64, depth=2)
    model, rules = build_parametrized_model(cfg, StructureConfig(name="btt", rank=2), TEACHER)
    up, down = model.blocks[0].ffn.ffn_up, model.blocks[0].ffn.ffn_down
    (w0, w1), d_in_base = up.factor_specs(), 64
    # 256 = 16 x 16 -> 1024 = 32 x 32 at rank 2: W0 maps m0 = 16 -> r n0 = 64, W1 maps r m1 = 32 -> n1 = 32.
    assert (w0.fan_in, w0.fan_out, w1.fan_in, w1.fan_out) == (16, 64, 32, 32)
    assert rules["blocks.0.ffn.ffn_up.W0"] == ParamRule(spectral_std(16, 64), d_in_base / (2 * 16), True)
    assert rules["blocks.0.ffn.ffn_up.W1"] == ParamRule(spectral_std(32, 32), d_in_base / (2 * 32), True)
    assert rules["blocks.0.ffn.ffn_down.W1"].init_std == 0.0
    assert torch.count_nonzero(down.W1) == 0 and torch.count_nonzero(model.head.weight) == 0
    assert up.W0.std().item() == pytest.approx(spectral_std(16, 64), rel=0.05)
    # The head stays dense (all_but_last); the input layer (fan-in 8 at every width) is BTT too.
    assert rules["head.weight"] == ParamRule(0.0, 64 / 256, True)
    assert model.input.structure == "btt"
    assert rules["input.W0"].lr_mult == pytest.approx(8 / (2 * model.input.factor_specs()[0].fan_in))


def test_naive_mode_gives_every_btt_factor_the_dense_multiplier():
    cfg = ModelConfig(family="mlp", width=256, base_width=64, depth=1, parametrization="naive")
    _, rules = build_parametrized_model(cfg, StructureConfig(name="btt"), TEACHER)
    assert rules["blocks.0.ffn.ffn_up.W0"].lr_mult == rules["blocks.0.ffn.ffn_up.W1"].lr_mult == 64 / 256
    assert rules["blocks.0.ffn.ffn_down.W0"].lr_mult == 256 / 1024


def test_btt_moe_router_is_a_zero_init_dense_gate_and_experts_follow_rank_one_btt():
    cfg = ModelConfig(family="mlp", width=256, base_width=64, depth=1)
    model, rules = build_parametrized_model(cfg, StructureConfig(name="btt_moe", experts=4, top_k=2), TEACHER)
    layer = model.blocks[0].ffn.ffn_up
    assert rules["blocks.0.ffn.ffn_up.router.weight"] == ParamRule(0.0, 64 / 256, True)
    assert torch.count_nonzero(layer.router.weight) == 0
    w0, w1 = layer.factor_specs()
    assert rules["blocks.0.ffn.ffn_up.W0"].lr_mult == 64 / (2 * w0.fan_in)
    assert rules["blocks.0.ffn.ffn_up.W1"].lr_mult == 64 / (2 * w1.fan_in)


def test_gpt2_moe_ffn_router_tied_head_and_embeddings():
    cfg = ModelConfig(family="gpt2", width=128, base_width=64, depth=1, head_dim=32, context=16,
                      tie_head=True, ffn_experts=4, ffn_top_k=2)
    model, rules = build_parametrized_model(cfg, StructureConfig(name="dense"), TEXT)
    assert set(rules) == {n for n, _ in model.named_parameters()}
    assert rules["blocks.0.ffn.router.weight"] == ParamRule(0.0, 64 / 128, True)
    assert rules["blocks.0.ffn.experts.1.ffn_down.weight"] == ParamRule(0.0, 256 / 512, True)  # fan-in 4 x width
    assert rules["blocks.0.attn.attn_out.weight"] == ParamRule(0.0, 64 / 128, True)
    assert rules["blocks.0.attn.q.weight"] == ParamRule(spectral_std(128, 128), 64 / 128, True)
    assert rules["wte.weight"] == rules["wpe.weight"] == ParamRule(0.02, 1.0, True)  # tied: trained as an embedding
    assert rules["ln_f.weight"] == ParamRule(None, 1.0, False)


def test_vit_class_token_and_position_embedding_are_embeddings():
    cfg = ModelConfig(family="vit", width=64, base_width=32, depth=1, head_dim=16, patch_size=4)
    model, rules = build_parametrized_model(cfg, StructureConfig(name="dense"), IMAGE)
    assert rules["cls_token"] == rules["pos_embed"] == ParamRule(0.02, 1.0, True)
    assert model.pos_embed.std().item() == pytest.approx(0.02, rel=0.2)
    assert rules["patch_embed.weight"].lr_mult == 1.0  # its fan-in (channels x patch area) does not grow


def test_base_width_the_model_cannot_build_names_the_field():
    cfg = ModelConfig(family="mlp", width=64, base_width=61, depth=1)
    with pytest.raises(StructureError, match=r"model\.base_width=61.*cannot factorise"):
        build_parametrized_model(cfg, StructureConfig(name="kron"), TEACHER)
    gpt = ModelConfig(family="gpt2", width=64, base_width=48, depth=1, head_dim=32, context=8)
    with pytest.raises(ModelConfigError, match=r"model\.base_width=48.*multiple of model\.head_dim=32"):
        build_parametrized_model(gpt, StructureConfig(name="dense"), TEXT)


def test_unknown_parametrization_in_the_model_config_is_rejected():
    cfg = ModelConfig(family="mlp", width=64, base_width=64, depth=1, parametrization="mup")
    with pytest.raises(ValueError, match=r"model\.parametrization='mup'"):
        build_parametrized_model(cfg, StructureConfig(name="dense"), TEACHER)
