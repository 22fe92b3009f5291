"""Exception types with messages that name the problem and, where possible, the fix."""

from __future__ import annotations


class AdvguardError(Exception):
    """Base class of every error advguard raises on purpose."""


class InputError(AdvguardError, ValueError):
    """An image batch or image file is not what the API expects (shape, dtype, range, NaN...)."""


class ImageTooLargeError(InputError):
    """An image is larger than the limits allow (pixels, decoded bytes, file bytes): a decompression bomb, or just too
    big; refused before decoding where its header says so."""


class DatasetNotFoundError(AdvguardError, FileNotFoundError):
    """A dataset's files are missing or corrupt; the message says what to run."""


def unknown_name(kind: str, name: str, known: list[str] | tuple[str, ...]) -> UnknownNameError:
    """Build the standard 'unknown X' error listing the valid names."""
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return UnknownNameError(f"unknown {kind} {name!r}.{hint} Known: {', '.join(sorted(known))}.")


class ParameterError(InputError):
    """A parameter is out of its allowed range or unknown; the message names it (a ValueError)."""


class ParameterTypeError(ParameterError, TypeError):
    """A parameter has the wrong type, or a keyword is not a parameter at all (also a TypeError)."""


class UnknownNameError(ParameterError, KeyError):
    """A registry (datasets, models, attacks, detectors) or a choice (a restoration method, a layer...) got a name it
    does not know. A :class:`ParameterError` (hence a ``ValueError``), and still a ``KeyError`` as it was."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class DeviceError(ParameterError):
    """A torch device that this machine does not have (``device="cuda"`` without a GPU...); the message names the
    device and the devices that are available."""


class DetectorFileError(AdvguardError, ValueError):
    """A detector file is unreadable, corrupt, unsafe, or was made for another classifier."""


class ExecutorError(AdvguardError, RuntimeError):
    """The executor of an experiment's chunked work cannot run: an unknown executor, Ray not installed, no Ray
    cluster at the given address; the message says what to do."""
