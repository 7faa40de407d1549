"""The `tikosms` command: serve | api | worker | db | accounts | tokens | rates | numbering |
carriers | routes | numbers | opt-outs | smpp-users | smpp-server | smsc-sim | smsc-mo. Every
command takes --json where it prints data; errors are one line on stderr and a non-zero exit."""

from __future__ import annotations

from tikosms.cli import (  # noqa: F401  (registers)
    accounts,
    db,
    inbound,
    numbering,
    operators,
    rates,
    serve,
    smpp_server,
)
from tikosms.cli.base import cli


def _register_optional() -> None:
    try:
        from tikosms.cli import carriers  # noqa: F401
    except ImportError:  # pragma: no cover - during development only
        pass
    try:
        from tikosms.smpp.cli import smsc_mo, smsc_sim
    except ImportError:  # pragma: no cover
        return
    cli.add_command(smsc_sim)
    cli.add_command(smsc_mo)


_register_optional()


def main() -> None:
    from tikosms.cli.base import fail
    from tikosms.errors import OperatorError

    try:
        cli(prog_name="tikosms")
    except OperatorError as exc:
        fail(str(exc))
