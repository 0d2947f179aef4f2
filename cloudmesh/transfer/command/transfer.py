"""`cms transfer`: a thin layer over cloudmesh.transfer.Transfer that parses, calls and prints.

cmd5 exits 0 whatever a command does, and its @command decorator swallows SystemExit. This
command therefore parses its own arguments and, only when it runs as a one-shot `cms transfer ...`
(not inside the interactive shell), ends the process with a non-zero status on failure.
"""
import contextlib
import itertools
import json
import logging
import os
import signal
import sys
import textwrap
import threading
import traceback
from typing import Iterable

import yaml
from docopt import DocoptExit, docopt

from cloudmesh.common.Printer import Printer
from cloudmesh.shell.command import PluginCommand
from cloudmesh.transfer.limits import LIST_PAGE
from cloudmesh.transfer.logs import escape
from cloudmesh.transfer.records.base import State

log = logging.getLogger(__name__)


def one_shot() -> bool:
    """True when called from `cms`'s main() for a single command line, not from its shell loop."""
    frame, in_main = sys._getframe(1), False
    while frame:
        code = frame.f_code
        if code.co_name == "cmdloop":
            return False
        in_main |= code.co_name == "main" and code.co_filename.endswith(os.path.join("cloudmesh", "shell", "shell.py"))
        frame = frame.f_back
    return in_main


def printable(value):
    """`value` with every control character in its text escaped (ESC as \\x1b), so that a name
    from a bucket cannot steer the terminal; dicts and lists are escaped throughout."""
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [printable(v) for v in value]
    return value


def error(message: str) -> None:
    print(f"ERROR: {printable(' '.join(str(message).split()))}", file=sys.stderr, flush=True)


def note(message: str) -> None:
    """A line for the person at the terminal, on stderr so that it never mixes with the output."""
    print(printable(message), file=sys.stderr, flush=True)


def dump_json(data) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


STATUS_ORDER = ["id", "state", "listing", "source", "target", "copy", "objects_total", "objects_done",
                "objects_skipped", "objects_unverified", "objects_failed", "bytes_total", "bytes_done", "started",
                "finished", "seconds"]
CHECK_ORDER = ["finding", "path", "detail", "source_size", "target_size"]
LIST_ORDER = ["id", "state", "source", "target", "copy", "objects", "bytes", "started", "seconds"]


def attributes(rows: dict) -> str:
    """A two-column table; values are shown as text so that 0 and False stay visible."""
    shown = {k: v if isinstance(v, (dict, list)) else str(v if v is not None else "") for k, v in rows.items()}
    return str(Printer.attribute(printable(shown), order=list(shown), sort_keys=False))


def print_status(status, output: str) -> None:
    if output == "json":
        dump_json(status)
    elif isinstance(status, list):
        rows = [{**s, "objects": f"{s['objects_done']}/{s['objects_total']}",
                 "bytes": f"{s['bytes_done']}/{s['bytes_total']}"} for s in status]
        print(Printer.write(printable(rows), order=LIST_ORDER, sort_keys=False, output="table") if rows
              else "no transfers yet")
    else:
        rows = {key: status[key] for key in STATUS_ORDER}
        rows["warnings"] = len(status["warnings"])
        if status["workers"]:
            rows["workers"] = [f"{w}: {n['objects']} objects, {n['bytes']} bytes" for w, n in status["workers"].items()]
        for name in ("errors", "unverified", "warnings"):
            if status[name]:
                rows[name] = [f"{e['path']}: {e['message']}" for e in status[name]]
        print(attributes(rows))


def print_rows(rows: list[dict], order: list[str], output: str, empty: str) -> None:
    if output == "json":
        dump_json(rows)
    elif rows:
        print(Printer.write(printable(rows), order=order, sort_keys=False))
    elif empty:
        print(empty)


def stream_rows(rows: Iterable[dict], order: list[str], output: str, empty: str) -> None:
    """Print rows as they come, never holding more than a page: JSON as one array written element
    by element, a table a page of rows at a time."""
    rows, count = iter(rows), 0
    if output == "json":
        print("[", end="")
        for count, row in enumerate(rows, 1):
            print(("," if count > 1 else "") + "\n  " + json.dumps(row, ensure_ascii=False), end="", flush=True)
        print("\n]" if count else "]")
        return
    while page := list(itertools.islice(rows, LIST_PAGE)):
        count += len(page)
        print(Printer.write(printable(page), order=order, sort_keys=False), flush=True)
    if not count and empty:
        print(empty)


@contextlib.contextmanager
def ctrl_c_cancels(api):
    """While a transfer runs in the terminal, the first Ctrl-C cancels it (open uploads are
    aborted, the record says cancelled) and a second one quits at once (the record then shows
    the transfer interrupted, to resume later). Yields a list that holds the signal once pressed."""
    pressed = []
    if threading.current_thread() is not threading.main_thread():
        yield pressed
        return

    def interrupt(signum, frame):
        if pressed:
            note("quit at once; 'cms transfer resume' goes on with it")
            os._exit(130)
        pressed.append(signum)
        api.stop.set()
        note("cancelling: aborting open uploads (press Ctrl-C again to quit at once)")

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)


def port(value: str) -> int:
    from cloudmesh.transfer.errors import UsageError
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise UsageError(f"--port must be a number from 1 to 65535, not '{value}'")
    return int(value)


def unverified_note(status: dict) -> str | None:
    """A line on the objects a completed copy could not verify, or None when it verified them all."""
    count = status["objects_unverified"]
    if status["state"] != State.COMPLETED or not count:
        return None
    first = status["unverified"][0]
    return (f"transfer '{status['id']}': {count} of {status['objects_total']} objects copied but not verified; "
            f"first: {first['path']}: {first['message']}")


def failure(status: dict) -> str | None:
    """The one-line reason a finished transfer failed, or None when it completed."""
    if status["state"] == State.COMPLETED:
        return None
    settled = status["objects_done"] + status["objects_skipped"]
    total = f"{status['objects_total']} objects" + (" listed so far" if status.get("listing") else "")
    if status["state"] == State.CANCELLED:
        return (f"transfer '{status['id']}' cancelled: {settled} of {total} done; "
                f"'cms transfer resume --id={status['id']}' goes on with it")
    first = status["errors"][0] if status["errors"] else None
    shown = first and (first["path"] if len(first["path"]) <= 80 else first["path"][:60] + "...")
    reason = f"; first: {shown}: {first['message']}" if first else f": {status.get('message') or 'failed'}"
    return f"transfer '{status['id']}' {status['state']}: {status['objects_failed']} of {total} failed{reason}"


class TransferCommand(PluginCommand):

    def do_transfer(self, args):
        """
        ::

          Usage:
            transfer copy --source=SOURCE --target=TARGET [-r] [--id=ID] [--sync] [--compare=MODE] [--include=GLOB]... [--exclude=GLOB]... [--dryrun] [--parallel=N] [--chunksize=SIZE] [--retries=N] [--cluster=ADDRESS | --workers=N] [--output=FORMAT] [-v...] [--log-file=LOG]
            transfer move --source=SOURCE --target=TARGET [-r] [--id=ID] [--sync] [--compare=MODE] [--include=GLOB]... [--exclude=GLOB]... [--dryrun] [--parallel=N] [--chunksize=SIZE] [--retries=N] [--cluster=ADDRESS | --workers=N] [--output=FORMAT] [-v...] [--log-file=LOG]
            transfer check --source=SOURCE --target=TARGET [-r] [--download] [--output=FORMAT] [-v...] [--log-file=LOG]
            transfer resume --id=ID [--parallel=N] [--retries=N] [--cluster=ADDRESS | --workers=N] [--output=FORMAT] [-v...] [--log-file=LOG]
            transfer cancel --id=ID [--output=FORMAT] [-v...] [--log-file=LOG]
            transfer cleanup --id=ID [-v...] [--log-file=LOG]
            transfer list --target=TARGET [-r] [--output=FORMAT] [-v...] [--log-file=LOG]
            transfer delete --target=TARGET [-r] [-v...] [--log-file=LOG]
            transfer config FILE [-v...] [--log-file=LOG]
            transfer config [--file=FILE] [-v...] [--log-file=LOG]
            transfer run --id=ID --data=PATH [--copy=BOOL] [--output=FORMAT] [-v...] [--log-file=LOG]
            transfer --id=ID --data=PATH [--copy=BOOL] [--output=FORMAT] [-v...] [--log-file=LOG]
            transfer status [--id=ID] [--output=FORMAT] [-v...] [--log-file=LOG]
            transfer statistic [--output=FORMAT] [-v...] [--log-file=LOG]
            transfer serve [--host=HOST] [--port=PORT] [-v...] [--log-file=LOG]

          Copy, move, list and delete files and folders between AWS S3, Azure Blob Storage and
          local disk, and report on the recorded transfers.

          Arguments:
            FILE    a YAML file with the default transfer: source: STORAGE:PATH, target: STORAGE:PATH

          Options:
            --source=SOURCE    where to copy from, as STORAGE:PATH (e.g. awss3:data)
            --target=TARGET    where to copy to, list or delete, as STORAGE:PATH (e.g. azure:backup/)
            -r                 work on a folder and everything under it
            --id=ID            the name of the transfer; generated and printed when omitted
            --data=PATH        a file or folder under the configured source, copied to the same path
                               under the configured target
            --copy=BOOL        False deletes each source object after its verified copy [default: True]
            --sync             skip objects whose target already matches (size and MD5, see --compare)
            --compare=MODE     how --sync compares: checksum (size and MD5) or mtime (size, and the
                               target no older than the source) [default: checksum]
            --include=GLOB     only objects whose path inside the source folder matches (repeatable)
            --exclude=GLOB     leave out objects whose path matches (repeatable)
            --dryrun           list what would be copied, skipped and deleted; change nothing
            --download         check by reading both sides and comparing their MD5s
            --parallel=N       requests for parts in flight (memory is about N x chunksize),
                               and twice as many objects at once [default: 8]
            --chunksize=SIZE   the part size data streams in, e.g. 8MiB [default: 8MiB]
            --retries=N        tries again after a transient failure (connection lost, timeout,
                               HTTP 5xx, SlowDown, ServerBusy), waiting longer each time [default: 4]
            --cluster=ADDRESS  spread the transfer over the workers of the Dask scheduler at
                               ADDRESS, e.g. tcp://10.0.0.5:8786 (default: cloudmesh.transfer.cluster
                               in cloudmesh.yaml, else this host alone); see README, "Running on a cluster"
            --workers=N        spread it over N worker processes started on this host
            --output=FORMAT    table or json [default: table]
            --file=FILE        as FILE (inside the cms shell only: cms runs any command line
                               with --file= as a script)
            --host=HOST        the address the REST service listens on [default: 127.0.0.1]
            --port=PORT        the port the REST service listens on [default: 8400]
            -v, --verbose      log what happens to stderr (-vv: in detail); secrets are masked
            --log-file=LOG     append a detailed log with timestamps to the file LOG (mode
                               0600), secrets masked; it has the traceback of an internal error

          Description:
            STORAGE is a storage name under cloudmesh.storage in cloudmesh.yaml; PATH is a file or
            folder inside it ('awss3:' alone is its root). With -r the contents of the source
            folder land under the target path: awss3:data/a/b.txt -> azure:backup/a/b.txt.
            A single file lands at the target path, or inside it when the target is a folder or
            ends with '/'. Every object's bytes are proven against what its source keeps (its MD5,
            S3 multipart ETag, Azure's MD5 of each range) before it becomes visible at the target
            and counts as done; one that nothing can prove is recorded unverified, and a move
            deletes a source object only after its copy is verified.

            transfer status                 lists all transfers, newest first
            transfer status --id=ID         one transfer, with its failed objects
            transfer statistic              totals by state and by route
            transfer check                  compares source and target object by object and
                                            lists what is missing, extra or different (exit 1)
            transfer resume --id=ID         goes on with an interrupted, failed or cancelled
                                            transfer: done objects stay done, uploaded parts of
                                            large objects are reused, changed sources start afresh
            transfer cancel --id=ID         stops a running transfer (from any shell), aborting
                                            its partial uploads; Ctrl-C does the same, twice quits
            transfer cleanup --id=ID        discards the partial uploads a stopped transfer left
                                            at the target (they cost storage until then)
            transfer serve                  serves the REST API (OpenAPI 3.0.2) until Ctrl-C;
                                            every request but /health needs the bearer token
                                            in CMS_TRANSFER_TOKEN or the config directory;
                                            it logs a line per request to stderr (and LOG)

          Examples:
            cms transfer copy --source=awss3:data --target=azure:data -r
            cms transfer move --source=local:report.pdf --target=awss3:archive/ --output=json
            cms transfer config transfer.yaml
            cms transfer run --id=nightly --data=images
            cms transfer status --id=nightly --output=json
            cms transfer check --source=awss3:data --target=azure:data -r
            cms transfer resume --id=nightly

          Exit status: 0 on success, 1 when a transfer or an operation failed (or check found a
          difference), 2 on invalid input.
        """
        code = self.transfer_command(args)
        if code and one_shot():
            raise SystemExit(code)
        return ""

    def transfer_command(self, args: str) -> int:
        """Run one `transfer` command line; print results to stdout, errors to stderr; return the exit code."""
        from cloudmesh.common import shlex
        doc = textwrap.dedent(self.do_transfer.__doc__)
        if (args or "").strip() in ("-h", "--help"):
            print(doc.replace("::", "", 1).strip())
            return 0
        try:
            arguments = docopt(doc, argv=shlex.split(args or ""), help=False)
        except DocoptExit:
            error(f"invalid arguments 'transfer {args}'; see 'cms transfer -h'")
            return 2
        from cloudmesh.transfer import logs
        from cloudmesh.transfer.errors import TransferError
        try:
            with logs.configured(arguments["--verbose"], arguments["--log-file"], service=arguments["serve"]):
                log.debug("cms transfer %s", args)
                code = self.guarded(arguments)
                log.debug("exit status %d", code)
                return code
        except TransferError as e:  # the log file cannot be written
            error(e)
            return e.exit_code

    def guarded(self, arguments: dict) -> int:
        """dispatch, with each failure turned into its line on stderr and its exit code; the
        traceback of an internal error goes to the log when there is one (-v or --log-file)."""
        from cloudmesh.transfer.errors import OptionError, TransferError
        logged = bool(arguments["--verbose"] or arguments["--log-file"])
        try:
            return self.dispatch(arguments)
        except TransferError as e:
            log.debug("%s: %s", e.__class__.__name__, e)
            error(f"--{e.option} {e.problem}" if isinstance(e, OptionError) else e)
            return e.exit_code
        except KeyboardInterrupt:
            error("interrupted")
            return 130
        except Exception as e:
            hint = "its traceback is in the log" if logged else "run with --log-file=LOG or -v for its traceback"
            error(f"internal error ({e.__class__.__name__}); {hint}")
            if logged:
                log.error("internal error", exc_info=e, extra={"stderr": bool(arguments["--verbose"])})
            if os.environ.get("CMS_TRANSFER_DEBUG") and not arguments["--verbose"]:
                traceback.print_exc()
            return 1

    def dispatch(self, arguments: dict) -> int:
        from cloudmesh.transfer import Transfer
        from cloudmesh.transfer.errors import UsageError
        from cloudmesh.transfer.options import TransferConfig

        output = arguments["--output"] or "table"
        if output not in ("table", "json"):
            raise UsageError(f"--output must be table or json, not '{output}'")
        recursive = bool(arguments["-r"])

        if any(arguments[name] for name in ("copy", "move", "run", "--data", "resume")):
            api = Transfer(config=TransferConfig.of(parallel=arguments["--parallel"],
                                                    chunksize=arguments["--chunksize"], retries=arguments["--retries"]),
                           cluster=arguments["--cluster"], workers=arguments["--workers"], notify=note)
            with ctrl_c_cancels(api) as pressed:
                status = self.start(api, arguments, output, recursive)
            if status is None:
                return 0
            print_status(status, output)
            reason = failure(status)
            if reason:
                error(reason)
                return 130 if pressed else 1
            note_line = unverified_note(status)
            if note_line:
                note(f"WARNING: {note_line}")
            return 0

        api = Transfer()
        if arguments["list"]:
            print_rows(api.list(arguments["--target"], recursive=recursive), ["name", "size", "modified", "md5"],
                       output, "")
        elif arguments["delete"]:
            for key in api.delete(arguments["--target"], recursive=recursive):
                print(f"deleted {printable(key)}")
        elif arguments["check"]:
            report = api.check(arguments["--source"], arguments["--target"], recursive, bool(arguments["--download"]))
            if output == "json":
                dump_json(report)
            else:
                print_rows(report["differences"], CHECK_ORDER, output, "")
            summary = (f"{report['objects_source']} objects at the source: {report['same']} same, "
                       f"{report['different']} different, {report['missing']} missing, {report['unproven']} "
                       f"unproven; {report['extra']} extra at the target")
            if not report["ok"]:
                error(f"check failed: {summary}")
                return 1
            note(f"check passed: {summary}")
        elif arguments["cancel"]:
            print_status(api.cancel(arguments["--id"]), output)
        elif arguments["cleanup"]:
            cleaned = api.cleanup(arguments["--id"])
            for key in cleaned:
                print(f"discarded the partial upload of {printable(key)}")
            if not cleaned:
                print("no partial uploads")
        elif arguments["serve"]:
            from cloudmesh.transfer.service.app import serve
            serve(arguments["--host"] or "127.0.0.1", port(arguments["--port"] or "8400"))
        elif arguments["config"]:
            print(yaml.safe_dump(api.configure(arguments["FILE"] or arguments["--file"]), sort_keys=False).rstrip())
        elif arguments["status"]:
            print_status(api.status(arguments["--id"]) if arguments["--id"] else api.transfers(), output)
        elif arguments["statistic"]:
            stats = api.statistic()
            if output == "json":
                dump_json(stats)
            else:
                rows = {key: stats[key] for key in ("bytes_total", "objects_total", "seconds_total",
                                                     "throughput_bytes_per_second")}
                rows["transfers"] = stats["transfers"]
                rows["by_route"] = {route: f"{r['transfers']} transfers, {r['bytes']} bytes"
                                    for route, r in stats["by_route"].items()}
                print(attributes(rows))
        return 0

    @staticmethod
    def start(api, arguments: dict, output: str, recursive: bool) -> dict | None:
        """Run a copy, move, run or resume; None for a --dryrun, which only prints its plan."""
        from cloudmesh.transfer.progress import TerminalProgress
        progress = TerminalProgress() if output == "table" and sys.stdout.isatty() else None
        if arguments["resume"]:
            return api.resume(arguments["--id"], progress=progress)
        if not (arguments["copy"] or arguments["move"]):
            return api.run(arguments["--id"], arguments["--data"], copy=arguments["--copy"])
        selection = {"include": arguments["--include"], "exclude": arguments["--exclude"],
                     "sync": arguments["--compare"] if arguments["--sync"] else None}
        if arguments["--dryrun"]:
            rows = api.preview(arguments["--source"], arguments["--target"], recursive, bool(arguments["move"]),
                               **selection)
            stream_rows(rows, ["action", "path", "target", "size"], output, "nothing to transfer")
            return None
        start = api.copy if arguments["copy"] else api.move
        return start(arguments["--source"], arguments["--target"], recursive=recursive, id=arguments["--id"],
                     progress=progress, **selection)
