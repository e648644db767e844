"""The library's one error type for user mistakes.

Library code raises :class:`UserError` (or a subclass: ``DataError``, ``RecipeError``,
``ThresholdError``, ``TrtError``, ``ModelIntegrityError``) with a message that names what was
wrong: the file and row, the key, the version. It never raises click errors; only the command
line (``flows.errors``) turns a ``UserError`` into one ``error: …`` line and exit status 2.
"""

from __future__ import annotations


class UserError(ValueError):
    """A mistake in what the user asked for (a path, a version, a value); the message says which."""
