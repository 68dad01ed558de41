"""One error type for bad input, always naming the file (and line, where there is one)."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Raised for malformed or inconsistent input; the message names file and line."""

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class ConfigError(ValueError):
    """Raised for a config value that cannot work (an unknown run, a conflicting name); the message names the key."""


class DeviceError(RuntimeError):
    """The configured device cannot be used here (e.g. GPUs in the machine, a torch without CUDA); the message names
    the fix. run_stage reports it as one line."""
