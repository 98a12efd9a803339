"""Errors caused by the user's input (config, data, model directory, run state). The CLI prints their
message, which says what was wrong and where, instead of a traceback (``USER_ERRORS``)."""


class ConfigError(ValueError):
    """A problem with a config file or override; the message says where."""


class DataError(ValueError):
    """A data file is malformed; the message names the file and the 1-based line number."""


class ModelLoadError(ValueError):
    """A local model / tokenizer directory is missing or incomplete."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or does not match the run."""


class RunDirError(RuntimeError):
    """The output directory cannot be used: it is a file, not writable, in use by another run (locked), or holds
    another run's outputs (without ``--resume`` / ``--overwrite``)."""


class RunInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped a run after a step; the message says which step and where its checkpoint is."""


class TrainingAborted(RuntimeError):
    """Raised after ``optim.max_bad_steps`` consecutive non-finite steps; the last checkpoint is intact."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    ModelLoadError,
    DataError,
    CheckpointError,
    RunDirError,
    TrainingAborted,
    FileNotFoundError,
)
