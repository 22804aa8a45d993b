"""Show what a run config builds: parameters, FLOPs (analytic and measured) and every linear layer's factors.

    python -m scaling.describe model=gpt2 structure=btt model.width=256
    python -m scaling.describe --json model=mlp data=teacher structure=kron

The overrides are the ones `python -m scaling.train` takes. The model is built and initialised exactly as a run
builds it (scaling.mup.parametrization), so each factor's init std and learning-rate multiplier are the ones training
uses. FLOPs are forward FLOPs per training unit (token for text, example otherwise); see scaling.models.flops.
"""

from __future__ import annotations

import scaling.omp_passive  # noqa: F401  (first: OMP_WAIT_POLICY before torch starts)

import argparse
import json
import sys
from typing import Any, NoReturn, Sequence

from omegaconf import OmegaConf

from scaling.cli.command import Command, CommandLineError, run_command
from scaling.config.schema import ModelConfig, StructureConfig
from scaling.config.compose import compose_run_config
from scaling.data.interface import DataInfo
from scaling.models.flops import attention_cores, measure_flops, model_flops
from scaling.models import ModelConfigError
from scaling.mup.parametrization import build_parametrized_model
from scaling.structures import StructureError
from scaling.train.plan import ConfigError, check_run_config_values, run_data


def describe_model(model_cfg: ModelConfig, structure_cfg: StructureConfig, info: DataInfo) -> dict[str, Any]:
    """Everything `describe` prints, as one JSON-serialisable dict."""
    model, rules = build_parametrized_model(model_cfg, structure_cfg, info)
    report = model_flops(model, info)
    measured = measure_flops(model, info)
    unit_flops = {layer.name: layer.flops for layer in report.layers}
    layers = []
    for name, layer in model.linear_layers():
        factors = [
            {
                "name": spec.name,
                "shape": list(spec.shape),
                "fan_in": spec.fan_in,
                "fan_out": spec.fan_out,
                "init_std": rules[f"{name}.{spec.name}"].init_std,
                "lr_mult": rules[f"{name}.{spec.name}"].lr_mult,
            }
            for spec in layer.factor_specs()
        ]
        layers.append(
            {
                "name": name,
                "role": layer.role,
                "structure": layer.structure,
                "shape": [layer.d_in, layer.d_out],
                "params": layer.num_params(),
                # None for a layer counted as part of an enclosing unit (an FFN-level mixture of experts)
                "flops": unit_flops.get(name),
                "flops_measured": measured.layers.get(name),
                "factors": factors,
            }
        )
    linear_names = {name for name, _ in model.linear_layers()}
    other_units = [
        {
            "name": unit.name,
            "role": unit.role,
            "structure": unit.structure,
            "params": unit.params,
            "flops": unit.flops,
            "flops_measured": measured.layers[unit.name],
        }
        for unit in report.layers
        if unit.name not in linear_names
    ]
    logit_scales = {name: core.scale for name, core in attention_cores(model)}
    attention = [
        {
            "name": a.name,
            "seq_len": a.seq_len,
            "d_attn": a.d_attn,
            "logit_scale": logit_scales[a.name],  # attn_scale / head_dim
            "flops": a.flops,
            "flops_measured": measured.attention[a.name],
        }
        for a in report.attention
    ]
    return {
        "family": model_cfg.family,
        "structure": structure_cfg.name,
        "layout": structure_cfg.layout,
        "layers_selected": selected if isinstance(selected := structure_cfg.layers, str) else list(selected),
        "width": model_cfg.width,
        "base_width": model_cfg.base_width,
        "depth": model_cfg.depth,
        "parametrization": model_cfg.parametrization,
        # attention logits are q.k * attn_scale / head_dim (None without attention)
        "attn_scale": model_cfg.attn_scale if attention else None,
        "head_dim": model_cfg.head_dim if attention else None,
        "input_lr_mult": model_cfg.input_lr_mult,
        "unit": info.unit,
        "params": report.params,
        "params_nonembed": report.params_nonembed,
        "forward_flops_per_unit": report.forward_flops_per_unit,
        "forward_flops_per_unit_measured": measured.total,
        "train_flops_per_unit": report.train_flops_per_unit,
        "linear_flops_per_unit": report.linear_flops_per_unit,
        "linear_flops_per_unit_measured": measured.linear_flops_per_unit,
        "attention_flops_per_unit": report.attention_flops_per_unit,
        "attention_flops_per_unit_measured": measured.attention_flops_per_unit,
        "layers": layers,
        "other_units": other_units,
        "attention": attention,
    }


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def format_text(info: dict[str, Any]) -> str:
    """Human-readable summary and per-layer table."""
    unit = info["unit"]
    lines = [
        f"{info['family']} x {info['structure']} (layers={info['layers_selected']}, layout={info['layout']}), "
        f"width {info['width']} (base {info['base_width']}), depth {info['depth']}, "
        f"parametrization {info['parametrization']}"
        + (f", input lr x{info['input_lr_mult']:g}" if info["input_lr_mult"] != 1 else ""),
        f"params: {info['params']:,} total, {info['params_nonembed']:,} non-embedding",
        f"forward FLOPs/{unit}: analytic {_num(info['forward_flops_per_unit'])} "
        f"(linear {_num(info['linear_flops_per_unit'])} + attention {_num(info['attention_flops_per_unit'])}), "
        f"measured {_num(info['forward_flops_per_unit_measured'])} "
        f"(linear {_num(info['linear_flops_per_unit_measured'])} "
        f"+ attention {_num(info['attention_flops_per_unit_measured'])}); "
        f"training 3x forward = {_num(info['train_flops_per_unit'])}",
    ]
    if info["attn_scale"] is not None:
        lines.append(
            f"attention logits: q.k * {info['attn_scale']:g} / head_dim {info['head_dim']} "
            f"= q.k * {info['attn_scale'] / info['head_dim']:.4g}"
        )
    lines += [
        "",
        f"{'layer':<28} {'role':<11} {'structure':<10} {'shape':>13} {'params':>10} "
        f"{'FLOPs/' + unit:>12} {'measured':>10}",
    ]
    for layer in info["layers"]:
        shape = f"{layer['shape'][0]}->{layer['shape'][1]}"
        lines.append(
            f"{layer['name']:<28} {layer['role']:<11} {layer['structure']:<10} {shape:>13} {layer['params']:>10,} "
            f"{_num(layer['flops']):>12} {_num(layer['flops_measured']):>10}"
        )
        for f in layer["factors"]:
            lines.append(
                f"    {f['name']:<10} shape {str(tuple(f['shape'])):<18} fan_in {f['fan_in']:<6} "
                f"fan_out {f['fan_out']:<6} init_std {_num(f['init_std']):<10} lr_mult {_num(f['lr_mult'])}"
            )
    for u in info["other_units"]:
        lines.append(
            f"{u['name']:<28} {u['role']:<11} {u['structure']:<10} {'':>13} {u['params']:>10,} "
            f"{_num(u['flops']):>12} {_num(u['flops_measured']):>10}"
        )
    for a in info["attention"]:
        lines.append(
            f"{a['name']:<28} {'attention':<11} {'T=' + str(a['seq_len']):<10} {'d=' + str(a['d_attn']):>13} "
            f"{0:>10} {_num(a['flops']):>12} {_num(a['flops_measured']):>10}"
        )
    return "\n".join(lines)


COMMAND = Command("scaling.describe", "run", usage="what a run config builds: params, FLOPs, every factor.\n"
                  "  python -m scaling.describe [--json] [overrides, e.g. model=gpt2 structure=btt model.width=256]")


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(COMMAND, sys.argv[1:] if argv is None else list(argv), describe_command)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one `error:` line (run_command), not argparse's usage + error
        raise CommandLineError(f"{message}; usage: python -m scaling.describe [--json] [overrides]")


def describe_command(argv: Sequence[str]) -> int:
    parser = _Parser(prog="python -m scaling.describe", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=gpt2 structure=btt model.width=256")
    args = parser.parse_intermixed_args(argv)  # overrides before and after --json
    cfg = compose_run_config(args.overrides)
    try:
        check_run_config_values(cfg)  # the checks `train` makes first (the model's settings; not its budget)
        model_cfg: ModelConfig = OmegaConf.to_object(cfg.model)
        structure_cfg: StructureConfig = OmegaConf.to_object(cfg.structure)
        result = describe_model(model_cfg, structure_cfg, run_data(cfg))
    except (ConfigError, StructureError, ModelConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result) if args.json else format_text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
