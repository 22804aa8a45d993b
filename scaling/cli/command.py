"""Hydra's standard flags for the project's commands (train, launch, status, describe), run by Hydra itself.

    --help, --hydra-help, --cfg job|hydra|all [--resolve] [--package P], --info [all|config|defaults|...],
    --shell-completion install=bash|query=bash, --version

The commands compose configs with Hydra's compose API, so Hydra never makes a run directory: results stay in the
results store and nothing is written under outputs/. Hydra's launcher and sweeper settings do not apply: runs are
launched by scaling.launch (`cluster=local|debug|slurm`), and `-m` on scaling.train is turned into a sweep
(scaling.cli.multirun).
"""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass
from typing import Callable, NoReturn, Sequence

from hydra._internal.hydra import Hydra
from hydra._internal.utils import create_config_search_path, get_args_parser
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from scaling.config.compose import CONF_DIR, SweepPathError, run_overrides, with_config_dirs
from scaling.config.validate import SettingError, describe_error
from scaling.launch.cancel import LaunchInterrupted
from scaling.process import log_to_console
from scaling.store.results import DirectoryError, write_error

# Flags that make a command print something about its config instead of running.
INFO_FLAGS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc",
              "--version")
MULTIRUN_FLAGS = ("--multirun", "-m")
HYDRA_RUN_SETTINGS = ("hydra/launcher", "hydra.launcher", "hydra/sweeper", "hydra.sweeper", "hydra.sweep",
                      "hydra.run", "hydra.mode", "hydra/job_logging", "hydra.job")
# The errors a bad command line raises in Hydra and OmegaConf: each is reported as one line, never a traceback.
CONFIG_ERRORS = (HydraException, OmegaConfBaseException)

FLAGS_TEXT = """\
--help, -h                  this help
--cfg job|hydra|all         print the composed config and exit (--resolve: interpolations resolved)
--info [config|defaults|defaults-tree|searchpath|plugins|all]   Hydra's view of the config and exit
--shell-completion, -sc     install=bash (console scripts: eval "$$(scaling-train -sc install=bash)")
--hydra-help                Hydra's own help"""


@dataclass(frozen=True)
class Command:
    """One command line tool: its name, the conf/ config it composes and what its help says."""

    name: str  # scaling.train
    config_name: str  # run | launch
    usage: str  # usage lines, shown first by --help
    prepare: Callable[[list[str]], list[str]] = run_overrides  # args -> what Hydra composes (launch: no run keys)

    def help_node(self) -> dict[str, str]:
        """hydra/help config: the template Hydra's --help renders ($APP_CONFIG_GROUPS, $CONFIG, ...)."""
        template = (f"python -m {self.name}: {self.usage}\n\n"
                    "== Config groups ==\nChoose an option with group=option, e.g. structure=btt:\n\n"
                    "$APP_CONFIG_GROUPS\n"
                    f"== Flags ==\n{FLAGS_TEXT}\n\n"
                    "== Config ==\nOverride any value with key=value, e.g. model.width=256:\n\n$CONFIG\n"
                    f"Hydra users: see docs/configuration.md, \"For Hydra users\" ({self.name} never writes outputs/).")
        return {"app_name": self.name, "header": "", "footer": "", "template": template}


class CommandLineError(ValueError):
    """A Hydra habit this tool handles differently; the message names what to type instead."""


def reject_hydra_run_settings(args: Sequence[str]) -> None:
    """Hydra's launcher/sweeper/run-dir settings have no effect here: say what does the job instead."""
    for arg in args:
        key = arg.lstrip("+~").split("=", 1)[0]
        if key.startswith(HYDRA_RUN_SETTINGS):
            group = next(g for g in HYDRA_RUN_SETTINGS if key.startswith(g))
            raise CommandLineError(
                f"{arg}: {group} is not used, as runs are launched by scaling.launch; use cluster=slurm (or "
                "cluster=local, cluster=debug) and cluster.* settings, and -m on scaling.train for a grid; results go "
                "to results_root (docs/configuration.md: For Hydra users)")


def wants_info(args: Sequence[str]) -> bool:
    """Whether the command line asks for one of Hydra's informational flags."""
    return any(a in INFO_FLAGS or a.startswith(("--cfg=", "--info=")) for a in args)


def wants_multirun(args: Sequence[str]) -> bool:
    return any(a in MULTIRUN_FLAGS for a in args)


def show_info(command: Command, args: Sequence[str]) -> int:
    """Run Hydra's handler for the informational flag in `args` over this command's config; return the exit code."""
    parser = get_args_parser()
    parser.prog = f"python -m {command.name}"

    def one_line_error(message: str) -> NoReturn:  # argparse prints usage over many lines, then exits
        raise CommandLineError(f"{message}; see python -m {command.name} --help")

    parser.error = one_line_error
    # a command's own flags (describe --json) pass; overrides after a flag are kept; --version exits
    parsed, _ = parser.parse_known_intermixed_args(list(args))
    overrides = command.prepare(list(parsed.overrides))
    ConfigStore.instance().store(group="hydra/help", name=command.name, node=command.help_node())
    hydra_overrides = [*overrides, f"hydra/help={command.name}", f"hydra.job.name={command.name}"]
    GlobalHydra.instance().clear()
    hydra = Hydra.create_main_hydra2(task_name=command.name,
                                     config_search_path=create_config_search_path(str(CONF_DIR)))
    try:
        if parsed.help:
            parsed.overrides = hydra_overrides
            hydra.app_help(config_name=command.config_name, args_parser=parser, args=parsed)
        elif parsed.hydra_help:
            parsed.overrides = hydra_overrides
            hydra.hydra_help(config_name=command.config_name, args_parser=parser, args=parsed)
        elif parsed.cfg:
            hydra.show_cfg(config_name=command.config_name, overrides=hydra_overrides, cfg_type=parsed.cfg,
                           package=parsed.package, resolve=parsed.resolve)
        elif parsed.shell_completion:
            hydra.shell_completion(config_name=command.config_name, overrides=overrides)
        else:
            hydra.show_info(parsed.info, config_name=command.config_name, overrides=hydra_overrides)
    finally:
        GlobalHydra.instance().clear()
    return 0


def run_command(command: Command, args: Sequence[str], run: Callable[[list[str]], int],
                multirun: Callable[[list[str]], int] | None = None) -> int:
    """A command's main: Hydra's flags, `-m` (where the command has a multirun), else `run(overrides)`.
    The library's log records are shown as it prints them; bad input, and a results root that cannot be written
    (read-only, immutable, full), end with one `error: ...` line and exit code 2."""
    log_to_console()
    try:
        args = with_config_dirs(args)  # --config-dir DIR: a hydra.searchpath override every compose takes
        reject_hydra_run_settings(args)
        if wants_multirun(args):
            if multirun is None:
                raise CommandLineError(f"{command.name} has no -m/--multirun: use python -m scaling.train -m "
                                       "a=1,2 b=x,y, or a sweep file with python -m scaling.launch +sweep=FILE")
            return multirun([a for a in args if a not in MULTIRUN_FLAGS])
        if wants_info(args):
            return show_info(command, args)
        return run(args)
    except CONFIG_ERRORS as err:
        named = [a for a in args if "${" in a]  # an unresolvable ${...} names no setting: name the overrides
        where = f"{' '.join(named)}: " if named and isinstance(err, InterpolationResolutionError) else ""
        print(f"error: {where}{one_line(err)}", file=sys.stderr)
        return 2
    except (CommandLineError, SweepPathError, DirectoryError, SettingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a write that failed after the results root's check (the disk filled up, ...)
        line = write_error(err)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2
    except LaunchInterrupted as err:
        print(f"interrupted: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 128 + signal.SIGINT


def one_line(err: BaseException) -> str:
    """An exception as one line of text (scaling.config.validate.describe_error: the field and the type it takes);
    Hydra's messages span lines and end with the config search path."""
    text = describe_error(err).split("Config search path:")[0]
    return " ".join(text.split()) or type(err).__name__

