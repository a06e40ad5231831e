"""What the `medtl data` commands of the studies share: their registry and their arguments.

Each study registers one function that adds its `medtl data ...` commands (and its phantom
kinds under `medtl data phantoms`) to the one parser `medtl.cli` builds. A command function
takes the parsed arguments and returns an exit status; a `MedtlError` it raises becomes one
line on stderr and exit status 2 (`medtl.cli.main`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medtl import config as cfgmod
from medtl.errors import ConfigError
from medtl.registry import Registry

AddCommands = Callable[[Any, Any], None]   # (data subparsers, phantom subparsers) -> None
DATA_COMMANDS: Registry[AddCommands] = Registry("data command group")


def data_commands(name: str) -> Callable[[AddCommands], AddCommands]:
    """Register a study's function that adds its `medtl data` commands."""
    return DATA_COMMANDS.decorator(name)


def config_args(p: argparse.ArgumentParser, example: str = "seed=2") -> None:
    """--out, --config, --set, --show-config, --no-progress: every dataset builder's."""
    p.add_argument("--out", type=Path, help="dataset directory to create (must not exist)")
    p.add_argument("--config", type=Path, help="YAML file of configuration keys")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override one key (YAML value), e.g. --set {example}")
    p.add_argument("--show-config", action="store_true",
                   help="list every key with its default and source, then exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_from_args(args: argparse.Namespace, config_class: type, source: str,
                    build: Callable[..., Path]) -> int:
    """The body of a builder command: --show-config, or `build(source, out, config)`."""
    if args.show_config:
        print(cfgmod.describe(config_class))
        return 0
    for name in (source, "out"):
        if getattr(args, name) is None:
            raise ConfigError(f"--{name.replace('_', '-')} is required")
    config = cfgmod.load(config_class, args.config, cfgmod.parse_overrides(args.set))
    dest = build(getattr(args, source), args.out, config, progress=not args.no_progress)
    print(f"dataset written to {dest}; check it with: medtl data check {dest}")
    return 0
