"""User mistakes end in one line and exit status 2; everything else is a bug and keeps its traceback.

Library code (``quantgate.errors``) raises a subclass of :class:`UserError` (``DataError``, ``ThresholdError``,
``RecipeError``, ``TrtError``, or ``UserError`` itself) with a message that names what was wrong
(the file and row, the key, the version). Only the command-line edge turns it into text:
:func:`run` wraps a click command so that every entry point - ``quantgate <step>`` and the
``python -m flows.<step>`` commands that ``mlflow run`` executes - prints ``error: <message>``
to stderr and exits 2. ``quantgate --debug`` or ``QUANTGATE_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import os
import sys
import traceback

import click

from quantgate.errors import UserError
from quantgate.evidence_signing import redact_own_key
from quantgate.printable import shown

EXIT_USER_ERROR = 2
DEBUG_ENV = "QUANTGATE_DEBUG"


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def one_line(message: str) -> str:
    """Collapse a message onto one line (exception texts sometimes carry newlines), the evidence
    key blanked out (an error can quote a file it read, and a terminal's text ends up in CI logs
    and journals: the twenty-fifth adversarial run saw the key quoted on stderr) and control
    characters escaped (an error can quote store text, terminal escapes included)."""
    return shown(redact_own_key(" ".join(str(message).split())))


class UserErrorExit(click.ClickException):
    """How click reports a :class:`UserError`: ``error: <message>`` on stderr, exit status 2."""

    exit_code = EXIT_USER_ERROR

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


class GuardedGroup(click.Group):
    """A click group whose sub-commands report user errors in one line (``--debug``: traceback)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            if debugging():
                raise
            raise UserErrorExit(one_line(str(exc))) from None
        except CLICK_FLOW:
            raise
        except Exception:
            bug_exit()


# click's own control flow, never a bug
CLICK_FLOW = (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort)


def bug_exit() -> None:
    """A bug: its traceback on stderr, the evidence key blanked out of it (a message can quote
    a file's content: the thirty-ninth adversarial run had a lock timeout quote the key file)
    and each line's control characters escaped (the forty-eighth run's crash quoted a tag's
    terminal escapes raw), and exit status 1."""
    text = redact_own_key(traceback.format_exc()).rstrip()
    click.echo("\n".join(shown(line) for line in text.split("\n")), err=True)
    sys.exit(1)


def run(command: click.Command, args: list[str] | None = None) -> None:
    """Run a click command as a program (``python -m flows.<step>``): user errors become one
    line on stderr and exit 2; click's own usage errors keep their exit status 2."""
    from flows.process import set_up_process

    set_up_process()
    try:
        rv = command.main(args=args, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except UserError as exc:
        if debugging():
            raise
        UserErrorExit(one_line(str(exc))).show()
        sys.exit(EXIT_USER_ERROR)
    except Exception:
        bug_exit()
    sys.exit(rv if isinstance(rv, int) else 0)
