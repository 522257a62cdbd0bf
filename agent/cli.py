"""The `kernsplit` command line.

Subcommands live in their own modules under `agent.commands`; `kernsplit init` comes from the
init package through the `kernsplit.commands` entry-point group, so this package never imports
`init` (layers point one way).
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points

import click

# name -> "module:attribute" of a click command, imported only when that command runs, so that
# `kernsplit validate` does not pay for pyroute2 or BCC.
_BUILTIN = {
    "validate": "kernsplit.agent.commands.validate:validate",
    "agent": "kernsplit.agent.commands.agent:agent",
    "show": "kernsplit.agent.commands.show:show",
    "lab": "kernsplit.agent.commands.lab:lab",
}


def _plugins() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group="kernsplit.commands")}


class _LazyGroup(click.Group):
    def _targets(self) -> dict[str, str]:
        return {**_BUILTIN, **_plugins()}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self._targets())

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = self._targets().get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kernsplit")
def main() -> None:
    """kernsplit: transparent interception and weighted traffic splitting in the kernel."""
