"""``--help`` in sections: the options of ``serve``, ``build`` and ``test`` grouped by mode
and topic, as :data:`~nb2svc.config.OPTION_GROUPS` orders them.

A flat list of fifty options hides the five a reader came for; the section of each option
is its ``group`` in the one :data:`~nb2svc.config.OPTIONS` table, so a new option lands in
a section without anyone editing the help.
"""

from __future__ import annotations

import click

from nb2svc.config import OPTION_GROUPS, OPTIONS_BY_NAME

#: The section of a command's own parameters (targets, ``--mount``, ``--config``, ``--help``).
GENERAL = "Options"


class GroupedCommand(click.Command):
    """A click command whose ``--help`` prints one section per option group."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None or isinstance(param, click.Argument):  # the usage line names those
                continue
            option = OPTIONS_BY_NAME.get(param.name or "")
            sections.setdefault(option.group if option else GENERAL, []).append(record)
        for title in (GENERAL, *OPTION_GROUPS):
            if sections.get(title):
                with formatter.section(title):
                    formatter.write_dl(sections[title])


__all__ = ["GENERAL", "GroupedCommand"]
