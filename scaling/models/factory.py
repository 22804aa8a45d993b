"""The layer factory: every linear map of a model is requested here by role, structured if selected, else dense.

Role selection (`structure.layers`), over the linear layers in registration order (the order a model requests
them, which is the order they appear in model.linear_layers()):
  all            every layer
  all_but_last   every layer except the last one, the head (the input layer is included, as in the reference)
  intermediate   every layer except the first one (the input-side layer) and the head
  ffn            ffn_up and ffn_down
  attn           q, k, v and attn_out
  [roles...]     an explicit list of roles, e.g. [q, k, ffn_up]
Every family requests the head last, so "the last layer" is the layer with role `head`. A GPT-2 with a tied head
has no head layer (the unembedding reuses the token embedding), so there `all_but_last` selects every layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from omegaconf import ListConfig

from scaling.config.schema import StructureConfig
from scaling.structures import StructuredLinear, StructureError, build_linear

ROLES = ("input", "patch_embed", "q", "k", "v", "attn_out", "ffn_up", "ffn_down", "head")
INPUT_ROLES = frozenset({"input", "patch_embed"})  # the layers model.input_lr_mult acts on
ROLE_GROUPS = {"ffn": ("ffn_up", "ffn_down"), "attn": ("q", "k", "v", "attn_out")}
SELECTORS = ("all", "all_but_last", "intermediate", *ROLE_GROUPS)
DENSE = StructureConfig(name="dense")


@dataclass(frozen=True)
class RoleSelection:
    """Which layers get the structure: a named selector, or an explicit set of roles."""

    selector: str | None = None
    roles: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, layers: object) -> "RoleSelection":
        """Parse `structure.layers`; StructureError names the field and the valid choices."""
        if isinstance(layers, str):
            if layers not in SELECTORS:
                raise StructureError(
                    f"structure.layers={layers!r} is not a selector; choose one of {list(SELECTORS)} "
                    f"or a list of roles from {list(ROLES)}"
                )
            return cls(selector=layers)
        if isinstance(layers, (Sequence, ListConfig)) and len(layers) > 0:
            unknown = [r for r in layers if r not in ROLES]
            if unknown:
                raise StructureError(
                    f"structure.layers has unknown roles {unknown}; valid roles are {list(ROLES)} "
                    f"(or use one selector of {list(SELECTORS)})"
                )
            return cls(roles=frozenset(layers))
        raise StructureError(
            f"structure.layers={layers!r} selects nothing; give one of {list(SELECTORS)} or a non-empty list of "
            f"roles from {list(ROLES)} (use structure=dense for an all-dense model)"
        )

    def selects(self, role: str, index: int) -> bool:
        """Whether the layer with this role, requested `index`-th (from 0), gets the structure."""
        if self.selector is None:
            return role in self.roles
        if self.selector == "all":
            return True
        if self.selector == "all_but_last":
            return role != "head"
        if self.selector == "intermediate":
            return index > 0 and role != "head"
        return role in ROLE_GROUPS[self.selector]


@dataclass
class LayerFactory:
    """Callable `factory(role, d_in, d_out)` -> StructuredLinear with `role` set; the structure if selected, else dense.

    `built` records the layers in request order; build_model checks the model registered them in that order.
    """

    structure: StructureConfig
    bias: bool = False
    selection: RoleSelection = field(init=False)
    built: list[StructuredLinear] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.selection = RoleSelection.parse(self.structure.layers)

    def __call__(self, role: str, d_in: int, d_out: int) -> StructuredLinear:
        if role not in ROLES:
            raise ValueError(f"layer role {role!r} is not one of {list(ROLES)}")
        selected = self.selection.selects(role, len(self.built))
        cfg = self.structure if selected else DENSE
        try:
            layer = build_linear(cfg, d_in, d_out, bias=self.bias)
        except StructureError as err:
            raise StructureError(f"{role} layer #{len(self.built)} ({d_in} -> {d_out}): {err}") from err
        layer.role = role
        self.built.append(layer)
        return layer
