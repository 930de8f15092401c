"""The ``undersign`` command line, a Flask CLI group (``flask --app widget ...`` works too).

``serve`` needs no app in this process (gunicorn's workers build their own) and ``verify``
only talks HTTP to a service; the other commands build the app from the same ``WIDGET_*``
settings and talk to its Redis.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click
from flask.cli import ScriptInfo, with_appcontext

if TYPE_CHECKING:
    from rich.table import Table

    from .statements import StatementRegistry
    from .store import LogEntry, Store

# The app's modules are imported inside the commands, so `--help` and `serve` stay light.


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Port to listen on.",
)
@click.option("--workers", type=int, default=None, help="Worker processes (default: per CPU).")
def serve_command(host: str, port: int, workers: int | None) -> None:
    """Run the service with gunicorn and one mail worker (starting the embedded Redis when
    needed)."""
    from .server import serve

    raise SystemExit(serve(host, port, workers))


@click.command("worker")
@click.option("--burst", is_flag=True, help="Send what is queued now, then exit.")
@click.option(
    "--check",
    is_flag=True,
    help="Exit 0 if a worker on this host sent a heartbeat in the last minute, else 1 "
    "(for health checks; builds no app).",
)
@click.pass_context
def worker_command(ctx: click.Context, burst: bool, check: bool) -> None:
    """Send confirmation mail from the queue (RQ on the service's Redis): statements with
    confirm = "email". Stops after the mail in hand on SIGTERM or Ctrl-C."""
    import logging
    import os

    from .jobs import alive_here, worker_connection

    if check:
        from .server import EmbeddedRedis

        url = (
            os.environ.get("WIDGET_REDIS_URL")
            or EmbeddedRedis(os.environ.get("WIDGET_DATA_DIR", "./var")).url
        )
        cluster = os.environ.get("WIDGET_REDIS_CLUSTER", "").lower() in ("1", "true", "yes", "on")
        raise SystemExit(0 if alive_here(worker_connection(url, cluster)) else 1)
    from .jobs import Mailer, work
    from .mail import SmtpTarget

    app = ctx.ensure_object(ScriptInfo).load_app()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    registry: StatementRegistry = app.extensions["undersign.statements"]

    def title(statement_id: str, lang: str) -> str:
        statement = registry.get(statement_id)
        return statement.text(lang).title if statement else statement_id

    smtp = app.config["SMTP_URL"]
    mailer = Mailer(
        store=app.extensions["undersign.store"],
        secret=app.config["SECRET_KEY"],
        sender=app.config["MAIL_FROM"],
        target=SmtpTarget.from_url(smtp) if smtp else None,
        public_url=app.config["PUBLIC_URL"],
        title=title,
    )
    if not smtp:
        click.echo("No WIDGET_SMTP_URL: no statement confirms by email; waiting anyway.")
    url, cluster = app.config["REDIS_URL"], app.config["REDIS_CLUSTER"]
    work(lambda: worker_connection(url, cluster), mailer, burst=burst)


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


def _known_statement(statement_id: str) -> None:
    from .api import get_registry

    if get_registry().get(statement_id) is None:
        raise click.ClickException(f"no statement {statement_id!r}")


@click.command("export")
@click.argument("statement_id")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, allow_dash=True),
    required=True,
    help="The file to write, or - for standard output.",
)
@with_appcontext
def export_command(statement_id: str, fmt: str, output: str) -> None:
    """Write STATEMENT_ID's endorsements (no emails, no IPs) to a CSV or JSON Lines file."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from .db import get_store
    from .export import export_lines

    _known_statement(statement_id)
    store = get_store()
    total = store.log_length(statement_id)
    to_stdout = output == "-"
    with (
        Progress(
            TextColumn("[bold]Exporting"),
            BarColumn(),
            MofNCompleteColumn(),
            console=Console(stderr=True),  # never mixed into the data on standard output
            transient=True,
        ) as progress,
        (
            click.open_file("-", "w", encoding="utf-8")
            if to_stdout
            else open(output, "w", encoding="utf-8", newline="")
        ) as handle,
    ):
        task = progress.add_task("export", total=total)

        def counted(entries: Iterator[LogEntry]) -> Iterator[LogEntry]:
            for entry in entries:
                progress.advance(task)
                yield entry

        for chunk in export_lines(counted(store.log(statement_id)), fmt):
            handle.write(chunk)
    where = "standard output" if to_stdout else output
    click.echo(f"Wrote {total} endorsements to {where}", err=to_stdout)


@click.command("strike")
@click.argument("statement_id")
@click.argument("entry_id")
@click.option(
    "--reason",
    default="",
    help="Why, at most 200 characters: kept in the record and published in the "
    "transparency log (no names).",
)
@with_appcontext
def strike_command(statement_id: str, entry_id: str, reason: str) -> None:
    """Strike an endorsement (spam, abuse): it stays in the record, marked struck."""
    _moderate(statement_id, entry_id, strike=True, reason=reason)


@click.command("unstrike")
@click.argument("statement_id")
@click.argument("entry_id")
@with_appcontext
def unstrike_command(statement_id: str, entry_id: str) -> None:
    """Restore a struck endorsement."""
    _moderate(statement_id, entry_id, strike=False, reason="")


def _moderate(statement_id: str, entry_id: str, *, strike: bool, reason: str) -> None:
    from .db import get_store
    from .store import LogNotReady

    _known_statement(statement_id)
    store = get_store()
    try:
        if strike:
            changed, count = store.strike(statement_id, entry_id, by="cli", reason=reason)
        else:
            changed, count = store.unstrike(statement_id, entry_id)
    except KeyError as exc:
        raise click.ClickException(f"no endorsement {entry_id!r} in {statement_id!r}") from exc
    except LogNotReady:
        raise click.ClickException(NOT_READY) from None
    verb = "struck" if strike else "restored"
    state = verb if changed else f"already {verb}"
    click.echo(f"{entry_id}: {state}; count is now {count}")


@click.command("open")
@click.argument("statement_id")
@with_appcontext
def open_command(statement_id: str) -> None:
    """Open STATEMENT_ID for new endorsements (its schedule still applies)."""
    from .db import get_store

    _known_statement(statement_id)
    get_store().set_closed(statement_id, False)
    click.echo(f"{statement_id}: open")


@click.command("close")
@click.argument("statement_id")
@with_appcontext
def close_command(statement_id: str) -> None:
    """Close STATEMENT_ID: the API answers 409 and widgets say it is closed."""
    from .db import get_store

    _known_statement(statement_id)
    get_store().set_closed(statement_id, True, by="cli")
    click.echo(f"{statement_id}: closed")


@click.command("watch")
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Most seconds between redraws.",
)
@click.option("--once", is_flag=True, help="Print the table once and exit.")
@with_appcontext
def watch_command(interval: float, once: bool) -> None:
    """A live table of counts per statement and per allied site."""
    from rich.console import Console
    from rich.live import Live

    from .api import get_registry
    from .db import get_store
    from .live import Hub

    store = get_store()
    registry = get_registry()
    console = Console()
    if once:
        console.print(watch_table(store, registry))
        return
    # The service's own live hub: classic or sharded pub/sub as the service uses it, and
    # it resubscribes by itself after a failover.
    mode = "sharded" if store.sharded else "classic"
    hub = Hub(store.redis, store, list(registry.ids()), interval, pubsub_mode=mode)
    hub.ensure_running()

    def changes() -> Iterator[None]:
        """Wake on a change (at most once per interval), or every interval anyway."""
        while True:
            hub.bell.event.wait(interval)
            time.sleep(0.01)
            yield

    try:
        if console.is_terminal:
            with Live(watch_table(store, registry), auto_refresh=False) as live:
                for _ in changes():
                    live.update(watch_table(store, registry), refresh=True)
        else:
            # Piped or logged (``| tee``, a service's journal): a redraw in place would show
            # nothing until the end, so the whole table is printed again when it changes.
            shown = ""
            for _ in itertools.chain([None], changes()):
                with console.capture() as capture:
                    console.print(watch_table(store, registry))
                table = capture.get()
                if table != shown:
                    console.file.write(table)
                    console.file.flush()
                    shown = table
    except KeyboardInterrupt:
        pass
    finally:
        hub.stop()


SURGING = "[bold red]▲ SURGING[/]"
NOT_READY = "the statement's transparency log is being prepared; nothing changed, try again"


def watch_table(store: Store, registry: StatementRegistry) -> Table:
    from rich.table import Table

    table = Table(title="Undersign: live endorsements", title_justify="left")
    table.add_column("Statement / allied site")
    table.add_column("Count", justify="right")
    table.add_column("Goal", justify="right")
    table.add_column("Last 5 min", justify="right")
    table.add_column("Surge")
    for statement in registry:
        stats = store.stats(statement.id)
        surge = store.surge(statement.id)
        count = int(stats["count"])
        share = f"{count / statement.goal:.1%}"
        mark = ""
        if surge.statement.surging:
            mark = SURGING
        elif surge.alert:
            mark = "[bold red]▲ a source is surging[/]"
        table.add_row(
            f"[bold]{statement.id}[/]",
            f"[bold]{count:,}[/]",
            f"{share} of {statement.goal:,}",
            f"{round(surge.statement.recent):,}",
            mark,
        )
        by_source = sorted(stats["by_source"].items(), key=lambda kv: (-int(kv[1]), kv[0]))
        listed = {source for source, n in by_source if int(n)}
        for source in surge.sources:
            if source not in listed:  # arrived lately, and every one of them struck
                by_source.append((source, 0))
        for source, n in by_source:
            rate = surge.sources.get(source)
            if not int(n) and rate is None:
                continue
            table.add_row(
                f"  {source}",
                f"{int(n):,}",
                "",
                f"{round(rate.recent):,}" if rate else "0",
                SURGING if rate and rate.surging else "",
            )
    return table


def _problem_text(problem: Any) -> str:
    errors = problem.extensions.get("errors") or {}
    if errors:
        return "; ".join(f"{field}: {message}" for field, message in errors.items())
    return str(problem.detail)


@click.group("block")
def block_group() -> None:
    """Block lists: client networks and email domains whose endorsements are refused."""


@block_group.command("list")
@with_appcontext
def block_list_command() -> None:
    """List the blocks in force (expired ones are forgotten)."""
    from .admin import block_json, current_blocks

    blocks = current_blocks()
    if not blocks:
        click.echo("No blocks.")
        return
    for block in blocks:
        item = block_json(block)
        until = f"until {item['expires']}" if item["expires"] else "no expiry"
        why = f"  {item['reason']}" if item["reason"] else ""
        click.echo(f"{item['id']}  {item['label']:<28}  {until:<30}  by {item['by']}{why}")


@block_group.command("add")
@click.option(
    "--network",
    metavar="CIDR",
    help="A client network (203.0.113.0/24, 2001:db8::/48) or one address.",
)
@click.option("--email-domain", metavar="DOMAIN", help="An email domain; its subdomains too.")
@click.option("--reason", default="", help="Why (kept with the block, shown to operators only).")
@click.option("--expires", metavar="RFC3339", help="When the block ends (2026-12-01T00:00:00Z).")
@with_appcontext
def block_add_command(
    network: str | None, email_domain: str | None, reason: str, expires: str | None
) -> None:
    """Refuse endorsements from a network or an email domain (403)."""
    from .admin import block_json, parse_block
    from .db import get_store
    from .errors import Problem

    body = {"network": network, "email_domain": email_domain, "reason": reason}
    if expires:
        body["expires"] = expires
    try:
        block = parse_block(body, "cli")
    except Problem as problem:
        raise click.ClickException(_problem_text(problem)) from None
    store = get_store()
    store.prune_blocks()
    block_id = store.add_block(block.record())
    item = block_json(type(block).from_record(block_id, block.record()))
    until = f" until {item['expires']}" if item["expires"] else ""
    click.echo(f"Blocked {item['label']}{until} (block {block_id}).")


@block_group.command("remove")
@click.argument("block_id")
@with_appcontext
def block_remove_command(block_id: str) -> None:
    """Lift block BLOCK_ID (every process applies it within 2 seconds)."""
    from .db import get_store

    if not get_store().remove_block(block_id):
        raise click.ClickException(f"no block {block_id!r}")
    click.echo(f"Removed block {block_id}.")


@click.command("strike-bulk")
@click.argument("statement_id")
@click.option("--source", help="Only endorsements through this source (exactly as listed).")
@click.option("--country", help="Only endorsements giving this country (ISO code).")
@click.option("--since", metavar="RFC3339", help="Only endorsements from this minute on.")
@click.option("--until", metavar="RFC3339", help="Only endorsements up to this minute.")
@click.option(
    "--upto", metavar="ENTRY_ID", help="Only entries up to this id (a dry run prints it)."
)
@click.option(
    "--reason",
    default="",
    help="Why (required unless --dry-run), at most 200 characters: kept with every "
    "endorsement struck and published in the transparency log (no names).",
)
@click.option("--dry-run", is_flag=True, help="Only say how many match; change nothing.")
@with_appcontext
def strike_bulk_command(
    statement_id: str,
    source: str | None,
    country: str | None,
    since: str | None,
    until: str | None,
    upto: str | None,
    reason: str,
    dry_run: bool,
) -> None:
    """Strike every endorsement of STATEMENT_ID that matches the filters (or count them)."""
    from .admin import parse_bulk
    from .db import get_store
    from .errors import Problem
    from .store import LogNotReady

    _known_statement(statement_id)
    body: dict[str, Any] = {"source": source, "country": country, "since": since}
    body |= {"until": until, "upto": upto, "reason": reason, "dry_run": dry_run}
    try:
        match, why, dry, last = parse_bulk(body)
    except Problem as problem:
        raise click.ClickException(_problem_text(problem)) from None
    store = get_store()
    selection = store.bulk_select(statement_id, match, last)
    n = len(selection.ids)
    if dry:
        through = f" (entries up to {selection.upto})" if selection.upto else ""
        click.echo(f"{n} endorsement{'' if n == 1 else 's'} match{through}; nothing changed.")
        return
    try:
        result = store.strike_bulk(statement_id, selection, by="cli", reason=why, match=match)
    except LogNotReady:
        raise click.ClickException(NOT_READY) from None
    click.echo(
        f"Struck {result.changed} of {n} matching; count is now {result.count}. "
        f"Bulk {result.bulk_id}: undo with `undersign undo-bulk {statement_id} {result.bulk_id}`."
    )


@click.command("undo-bulk")
@click.argument("statement_id")
@click.argument("bulk_id")
@with_appcontext
def undo_bulk_command(statement_id: str, bulk_id: str) -> None:
    """Restore what bulk strike BULK_ID struck (unless restored or struck again since)."""
    from .db import get_store
    from .store import LogNotReady

    _known_statement(statement_id)
    try:
        result = get_store().undo_bulk(statement_id, bulk_id)
    except LogNotReady:
        raise click.ClickException(NOT_READY) from None
    except KeyError:
        raise click.ClickException(f"no bulk strike {bulk_id!r} in {statement_id!r}") from None
    click.echo(f"Restored {result.changed} of bulk {bulk_id}; count is now {result.count}.")


@click.group("sessions")
def sessions_group() -> None:
    """Operator console sessions."""


@sessions_group.command("revoke-all")
@with_appcontext
def revoke_all_sessions_command() -> None:
    """End every console session now: everyone signs in again."""
    from .admin import get_sessions

    revoked = get_sessions().revoke_all()
    click.echo(f"Revoked {revoked} admin session{'' if revoked == 1 else 's'}.")


@click.command("verify")
@click.argument("base_url")
@click.argument("statement_id")
@click.option(
    "--key",
    "vkey",
    metavar="VKEY",
    help="The log's verifier key (name+id+key) to pin. Without it, the key the service "
    "serves is used, with a warning.",
)
@click.option(
    "--receipt",
    metavar="SECRET",
    envvar="UNDERSIGN_RECEIPT",
    help="Your endorsement receipt's secret ('-' reads it from stdin; or set "
    "UNDERSIGN_RECEIPT): check that your endorsement is in the log and print its status.",
)
@click.option(
    "--state",
    type=click.Path(dir_okay=False),
    help="A file keeping the last verified checkpoint of each log; later runs fail loudly "
    "when the log is not an extension of it.",
)
def verify_command(
    base_url: str, statement_id: str, vkey: str | None, receipt: str | None, state: str | None
) -> None:
    """Download STATEMENT_ID's public log from BASE_URL and check every entry, the Merkle
    root, the signed checkpoint and the count (over HTTP only: no app, no Redis)."""
    import sys

    from .verify import run

    if receipt == "-":
        receipt = sys.stdin.readline().rstrip("\r\n")
    raise SystemExit(run(base_url, statement_id, key=vkey, receipt=receipt, state=state))


@click.command("log-key")
@click.option(
    "--generate",
    is_flag=True,
    help="Print a new random key (a base64 Ed25519 seed) for WIDGET_LOG_KEY and exit.",
)
@click.pass_context
def log_key_command(ctx: click.Context, generate: bool) -> None:
    """Print the transparency log's verifier key, the line allies and verifiers pin."""
    if generate:
        from .tlog.note import generate_seed

        click.echo(generate_seed())
        return
    from .transparency import load_signer

    app = ctx.ensure_object(ScriptInfo).load_app()
    with app.app_context():
        click.echo(load_signer(app.config, app.extensions["undersign.store"]).verifier().vkey)


@click.command("migrate")
@click.option("--from", "source", required=True, metavar="URL", help="The Redis to copy from.")
@click.option("--to", "target", required=True, metavar="URL", help="The Redis to copy into.")
@click.option("--cluster-from", is_flag=True, help="The source is a Redis Cluster node.")
@click.option("--cluster-to", is_flag=True, help="The target is a Redis Cluster node.")
@click.option("--force", is_flag=True, help="Replace a statement's keys already in the target.")
def migrate_command(
    source: str, target: str, cluster_from: bool, cluster_to: bool, force: bool
) -> None:
    """Copy every key from one Redis to another (a single Redis into a cluster), statement
    by statement, then check each statement's count, record and log lengths. Stop the
    service (or close its statements) first: nothing may be written meanwhile."""
    from .db import make_client
    from .migrate import TargetNotEmpty, describe, migrate

    try:
        results = migrate(
            make_client(source, cluster_from),
            make_client(target, cluster_to),
            force=force,
            progress=lambda copied: click.echo(describe(copied)),
        )
    except TargetNotEmpty as exc:
        raise click.ClickException(
            f"the target already holds keys of {exc}: nothing copied (--force replaces them)"
        ) from None
    bad = [r.statement_id for r in results if not r.ok]
    if bad:
        raise click.ClickException(
            f"counts differ after the copy for {', '.join(bad)}: was the service writing?"
        )
    statements = sum(1 for r in results if r.statement_id)
    click.echo(f"Copied {statements} statements; every count and log length matches.")


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
    worker_command,
    statements_command,
    count_command,
    config_command,
    watch_command,
    export_command,
    strike_command,
    unstrike_command,
    strike_bulk_command,
    undo_bulk_command,
    block_group,
    open_command,
    close_command,
    sessions_group,
    verify_command,
    log_key_command,
    migrate_command,
]


def register(app_cli: click.Group) -> None:
    for command in COMMANDS:
        app_cli.add_command(command)


def _script_info() -> ScriptInfo:
    from . import create_app

    return ScriptInfo(create_app=lambda: create_app())


class Commands(click.Group):
    """The ``undersign`` group: an operator's mistake or an unreachable Redis is one line
    naming it and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from redis.exceptions import RedisClusterException, RedisError

        from .config import ConfigError
        from .statements import StatementError
        from .tlog.entries import EntryError

        try:
            return super().invoke(ctx)
        except (ConfigError, StatementError, EntryError) as exc:
            raise click.ClickException(str(exc)) from None
        except (RedisError, RedisClusterException) as exc:
            raise click.ClickException(f"cannot reach Redis: {exc}") from None
        except OSError as exc:  # a file or folder the operator named
            raise click.ClickException(str(exc)) from None


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="undersign")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Undersign: one statement, many allied sites, a count people can trust."""
    ctx.obj = _script_info()


for _command in COMMANDS:
    main.add_command(_command)

__all__ = ["main", "register"]
