"""The one thing every user-facing error has in common, so the CLI can tell them from bugs.

A `UserError` is a mistake in what was asked for (a file, a key, a value, a resource, a store that does not
answer): `ito-sweeps` prints its message, which names the problem and what to do next, as one line and
exits 2, without a traceback. Defined on its own so that catching it imports nothing heavy.
"""


class UserError(Exception):
    pass
