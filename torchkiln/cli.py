"""The `kiln` command line: the parser, built from the command modules in
`torchkiln.commands`, and how errors are reported.

Each command imports what it needs when it runs, so `kiln validate` and `kiln --help`
never import torch. A user's mistake is one line, never a traceback: exit 2 for an
invalid spec or usage, 1 for a failed run. `KILN_DEBUG=1` shows the full traceback
(with the causes) of any error instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Sequence

from torchkiln import __version__
from torchkiln.errors import Interrupted, KilnError, RunError, SpecError, Terminated

DESCRIPTION = """\
torchkiln: PyTorch pipelines as YAML, compiled into DVC stages.

A spec in pipelines/<name>.yaml names stages (load_data, augment, build_model,
train, evaluate, export) and the components they use. The day-to-day loop:

  kiln validate                 check every spec (all errors at once, file:line:col)
  kiln dvc                      write dvc.yaml from the specs
  dvc repro                     run what changed (or: kiln repro)
  dvc exp run -S 'pipelines/x.yaml:stages.train.optimizer.lr=0.01'
  dvc metrics show / dvc plots show / dvc exp show

  kiln run pipelines/x.yaml     run a pipeline without DVC (same outputs, same paths)
  kiln list [KIND]              what you can name in a spec, with parameters
  kiln schema -o kiln.schema.json   JSON Schema for editor completion

Exit codes: 0 ok, 2 invalid spec or usage, 1 a run failed.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiln", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"torchkiln {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(
        name: str, func: Callable[[argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    import importlib

    from torchkiln.commands import MODULES

    for module in MODULES:
        importlib.import_module(module).register(add)
    return parser


def debugging() -> bool:
    """`KILN_DEBUG=1` (or any value but 0/empty): errors are raised with their traceback."""
    return os.environ.get("KILN_DEBUG", "") not in ("", "0")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # a command that takes a list of inputs (`kiln predict SPEC a.png --top 3 b.png`) may
    # have them on either side of its options; anything else left over is an error
    # (after a `--`, everything is an input, even text that starts with a dash)
    spill = getattr(args, "intermixed", None)
    cut = extra.index("--") if "--" in extra else len(extra)
    if extra and spill and not any(e.startswith("-") and e != "-" for e in extra[:cut]):
        setattr(args, spill, [*getattr(args, spill), *extra[:cut], *extra[cut + 1 :]])
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.command == "run":  # a warm worker runs it when one is ready (torchkiln.warm)
            code = _run_warm(list(sys.argv[1:] if argv is None else argv))
            if code is not None:
                return code
        return int(args.func(args))
    except (KilnError, KeyboardInterrupt, Terminated) as exc:
        if debugging():
            raise
        return report(exc)
    except BrokenPipeError:  # `kiln list | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # as a process killed by SIGPIPE
    except OSError as exc:  # the file system refused (full, read-only, an I/O error)
        if debugging():
            raise
        return report(RunError(_os_error_text(exc)))
    finally:
        # the command is over: a SIGTERM now (a launcher stopping the other workers of a
        # failed stage) must not raise inside the interpreter's exit handlers, which would
        # print their traceback; it ends the process as it would have
        signal.signal(signal.SIGTERM, _exit_terminated)


def _run_warm(argv: list[str]) -> int | None:
    """The exit status of `kiln ARGV` run by a warm worker; None: run it here."""
    from torchkiln.warm import client  # light: no torch

    return client.run_warm(argv) if client.enabled() else None


def _os_error_text(exc: OSError) -> str:
    """`cannot write runs/x: Permission denied` style, from an OSError no command turned
    into a message of its own."""
    reason = exc.strerror or str(exc)
    if exc.filename is None:
        return reason
    return f"{reason}: {os.fsdecode(exc.filename)}"


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def _exit_terminated(signum: int, frame: object) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(128 + signum)


def report(exc: KilnError | KeyboardInterrupt | Terminated) -> int:
    """Print an error the user can act on (no traceback); return the exit code."""
    worker = os.environ.get("RANK") is not None and "WORLD_SIZE" in os.environ
    if isinstance(exc, Interrupted):
        # one line, not one per process: kiln's own launcher says it for its workers;
        # under torchrun (no kiln launcher), rank 0 does
        from torchkiln.runtime.launch import LAUNCHER_ENV  # light: no torch at import

        launched_by_kiln = LAUNCHER_ENV in os.environ
        if not worker or (os.environ.get("RANK") == "0" and not launched_by_kiln):
            print(str(exc), file=sys.stderr)
        return exc.exit_code
    if isinstance(exc, Terminated):
        print("terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    if isinstance(exc, SpecError):
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return exc.exit_code
    if isinstance(exc, KilnError):
        rank = os.environ.get("RANK")  # a distributed stage's worker says which it is
        where = f"[rank {rank}] " if rank is not None and "WORLD_SIZE" in os.environ else ""
        print(f"{where}error: {exc}", file=sys.stderr)
        return exc.exit_code
    print("interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
