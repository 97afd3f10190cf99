"""User-facing errors.

Anything a user can cause (bad config, missing dataset or weights, corrupt
file, NaN loss) raises a `UserError` subclass with a message that says what is
wrong and how to fix it. `launch.py` and the CLIs print such messages on one
line (`genjax: error: ...`) and exit non-zero instead of dumping a traceback.
"""


class UserError(Exception):
  """An error the user can fix; its message is shown without a traceback."""


class ConfigError(UserError):
  """Unknown config key, wrong type, or inconsistent values."""


class DatasetError(UserError):
  """Unknown dataset name, or a dataset that is not installed/prepared."""


class WeightsError(UserError):
  """Missing, corrupt or wrong-hash weight file."""


class CheckpointError(UserError):
  """A checkpoint that cannot be restored."""


class NonFiniteLossError(UserError):
  """Training produced NaN/inf; the run stops and keeps the last good checkpoint."""


class TrainingFailedError(UserError):
  """The family's own health check failed repeatedly (e.g. GAN mode collapse)."""


class InputError(UserError):
  """Images of the wrong shape/range/format, corrupt files, empty folders."""
