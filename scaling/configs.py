"""Compose run configs from `conf/` with Hydra, validated against the schema in scaling.config."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, TypeVar

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from scaling.config import RunConfig

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"


def register_schemas() -> None:
    """Make `run_schema` (the typed RunConfig) available to conf/run.yaml's defaults list."""
    ConfigStore.instance().store(name="run_schema", node=RunConfig)


def compose_conf(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose conf/<config_name>.yaml with Hydra overrides (schemas must be registered first)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name=config_name, overrides=list(overrides))


def compose_run_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose conf/run.yaml with Hydra overrides, e.g. ["model=vit", "model.width=128"]."""
    from scaling.validate import integral_overrides  # scaling.validate imports the schema modules

    register_schemas()
    cfg = compose_conf("run", integral_overrides(list(overrides)))
    OmegaConf.set_struct(cfg, True)
    return cfg


def as_dataclass(node: DictConfig, schema: type[T]) -> T:
    """A composed config section as its schema dataclass (it was validated against the schema when composed)."""
    return schema(**OmegaConf.to_container(node, resolve=True))
