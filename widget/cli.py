"""The ``undersign`` command line, a Flask CLI group (``flask --app widget ...`` works too).

``serve`` needs no app in this process (gunicorn's workers build their own); the other
commands build the app from the same ``WIDGET_*`` settings and talk to its Redis.
"""

from __future__ import annotations

import click
from flask.cli import ScriptInfo, with_appcontext

# The app's modules are imported inside the commands, so `--help` and `serve` stay light.


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option("--workers", type=int, default=None, help="Worker processes (default: per CPU).")
def serve_command(host: str, port: int, workers: int | None) -> None:
    """Run the service with gunicorn (starting the embedded Redis when needed)."""
    from .server import serve

    raise SystemExit(serve(host, port, workers))


@click.command("statements")
@with_appcontext
def statements_command() -> None:
    """List the statements with their counts."""
    from .api import get_registry
    from .db import get_store

    registry = get_registry()
    counts = get_store().counts(registry.ids())
    width = max((len(i) for i in registry.ids()), default=2)
    for statement in registry:
        goal = statement.goal
        count = counts[statement.id]
        click.echo(
            f"{statement.id:<{width}}  {count:>8,} / {goal:,}  ({count / goal:.1%})  "
            f"{statement.original.title}"
        )


@click.command("count")
@click.argument("statement_id")
@with_appcontext
def count_command(statement_id: str) -> None:
    """Print the live count of STATEMENT_ID."""
    from .api import get_registry
    from .db import get_store

    if get_registry().get(statement_id) is None:
        raise click.ClickException(f"no statement {statement_id!r}")
    click.echo(get_store().count(statement_id))


@click.command("config")
def config_command() -> None:
    """Print every WIDGET_* setting with its default, as a Markdown table."""
    from .config import SETTINGS

    click.echo("| Variable | Default | Meaning |\n| --- | --- | --- |")
    for setting in SETTINGS:
        default = setting.default if setting.default not in ("", None) else "(unset)"
        click.echo(f"| `{setting.env}` | `{default}` | {setting.doc} |")


COMMANDS: list[click.Command] = [
    serve_command,
    statements_command,
    count_command,
    config_command,
]


def register(app_cli: click.Group) -> None:
    for command in COMMANDS:
        app_cli.add_command(command)


def _script_info() -> ScriptInfo:
    from . import create_app

    return ScriptInfo(create_app=lambda: create_app())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="undersign")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Undersign: one statement, many allied sites, a count people can trust."""
    ctx.obj = _script_info()


for _command in COMMANDS:
    main.add_command(_command)

__all__ = ["main", "register"]
