"""A run's label: the name it is compared under in reports, plots, the results table and wandb.

Inside a sweep the label is the sweep variant's key (`btt_r4`), set at expansion into the top-level `label` of the
run config. Outside a sweep it is the structure plus the settings that distinguish its variants (`btt_r4`,
`low_rank_f0.25`, `tt_c3_r4`). A grid of `-m` gets its variants' labels from what it varies (`variant_label`).
The label is not part of a run's identity: it names a run, it does not change it.
"""

from __future__ import annotations

from typing import Any, Mapping

# The structure settings that tell variants of one structure apart, with their short tags.
_DISTINGUISHING = {
    "low_rank": (("rank", "r"), ("rank_frac", "f")),
    "btt": (("rank", "r"),),
    "btt_norm": (("rank", "r"),),
    "kron": (("cores", "c"),),
    "tt": (("cores", "c"), ("rank", "r")),
    "monarch": (("blocks", "b"),),
    "btt_moe": (("experts", "e"), ("top_k", "k")),
    "btt_moe_norm": (("experts", "e"), ("top_k", "k")),
}


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def default_label(cfg: Mapping[str, Any]) -> str:
    """Structure + distinguishing settings, e.g. `btt_r4`, `einsum_0.5_0.5_0_0_0_0_0`, `dense_moe8`."""
    structure = cfg["structure"]
    name = structure["name"]
    parts = [name]
    if name in ("einsum", "einsum_norm") and structure.get("theta") is not None:
        parts.append("_".join(_number(float(t)) for t in structure["theta"]))
    for key, tag in _DISTINGUISHING.get(name, ()):
        if structure.get(key) is not None:
            parts.append(f"{tag}{_number(structure[key])}")
    experts = cfg.get("model", {}).get("ffn_experts") or 0
    if experts:
        parts.append(f"moe{experts}")
    return "_".join(parts)


def _encoded(cfg: Mapping[str, Any], key: str) -> bool:
    """Whether `default_label` already tells apart runs that differ in override key `key`."""
    name = cfg["structure"]["name"]
    section, _, leaf = key.partition(".")
    if section == "structure":
        return not leaf or leaf in {k for k, _ in _DISTINGUISHING.get(name, ())} or (
            leaf == "theta" and name in ("einsum", "einsum_norm"))
    return key == "model.ffn_experts"


def variant_label(cfg: Mapping[str, Any], varied: Mapping[str, Any]) -> str:
    """The label of a grid point that sets the override keys `varied`: `default_label`, then `_<leaf>=<value>` for
    each varied key the default label does not show (`btt_r4_layout=balanced`, `dense_parametrization=naive`),
    so points that differ in any varied key get different labels."""
    extra = [f"{key.rsplit('.', 1)[-1]}={value}" for key, value in varied.items() if not _encoded(cfg, key)]
    return "_".join([default_label(cfg), *extra])


def run_label(cfg: Mapping[str, Any]) -> str:
    """The run's label: its sweep variant if it has one, else `default_label`."""
    return cfg.get("label") or default_label(cfg)
