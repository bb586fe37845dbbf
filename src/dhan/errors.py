"""Errors a user can cause and fix.

Every problem with the user's input (a file, a flag, a request) is raised as :class:`UserError` with a message
that says what was wrong, where (``FILE:LINE``, a field or a flag) and how to fix it. The command line prints it on
one line and exits with code 2; nothing else in the library catches it.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: printed as one line by the CLI, exit code 2."""


class DataFormatError(UserError):
    """A prepared dataset directory that is missing, damaged or from another format version."""
