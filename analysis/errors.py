"""The error every analysis step raises for a mistake in what was asked for.

An unknown experiment, a run that is no sweep, a table spec with a wrong key, a column the runs lack:
each is an `AnalysisError` whose message names the problem and what is there instead. It is a
`UserError`, so `ito-sweeps report` prints it as one line without a traceback, and a `ValueError` for
callers that catch those. Defined on its own so that checking a table spec imports neither MLflow nor
pandas.
"""
from ito_sweeps.errors import UserError


class AnalysisError(UserError, ValueError):
    """Something the user asked for that is not there: an unknown experiment, a run that is no sweep, ..."""
