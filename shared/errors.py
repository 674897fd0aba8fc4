"""The platform's declared errors: one base class, three families of mistakes, one of contention.

* :class:`InputError`: the data a user gave is wrong or missing (a log line, a
  scoring record, an imported file, a table or window with nothing to work on).
* :class:`ConfigurationError`: how the user asked is wrong (a setting, a command-line
  flag, a feature spec, a search space, a policy or alert-rules file).
* :class:`ArtifactError`: a model directory or registry entry that cannot be trusted
  or read (missing file, checksum mismatch, a spec that does not reproduce the weights).
* :class:`ConcurrencyError`: another process kept the resource busy (a Delta commit kept
  losing to concurrent writers, the registry's gate lock was not released in time): nothing
  was half-done, running the command again is the fix.

Each of the three families is also a :class:`ValueError`, so ``except ValueError`` keeps catching
them; :class:`MissingInputError` is also a :class:`FileNotFoundError`.

The ``ctr`` command prints a :class:`CtrError` as one line (``ctr <command>: error:
<message>``, exit status 2) and lets every other exception propagate with its full
traceback: anything outside these families is a bug, not a user's mistake.
"""

from __future__ import annotations


class CtrError(Exception):
    """Base of every error the platform declares; its message is meant for the user."""


class InputError(CtrError, ValueError):
    """Data, records or files a user gave that cannot be used as they are."""


class MissingInputError(InputError, FileNotFoundError):
    """An input the command needs does not exist (a log folder, a Delta table, a named file)."""


class ConfigurationError(CtrError, ValueError):
    """A setting, flag, feature spec, search space or policy that is invalid."""


class ArtifactError(CtrError, ValueError):
    """A model directory or registry entry that cannot be trusted or read."""


class CommandError(ConfigurationError):
    """Flags a command cannot run with: printed as one line to stderr, exit status 2, no traceback."""


class ConcurrencyError(CtrError):
    """Concurrent writers kept a command from finishing its write (a Delta commit retried until
    the limit, the gate lock of a registered model held past the wait); nothing was half-written."""
