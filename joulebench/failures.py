"""Why a cell failed, in one line: the failures a grid cell records instead of stopping the run."""

from __future__ import annotations

MAX_MESSAGE = 300


class CellFailure(Exception):
    """A failure that belongs to one cell's settings, not to the harness."""

    kind = "error"


class NonFiniteLoss(CellFailure, FloatingPointError):
    kind = "non-finite loss"


class GenerationError(CellFailure):
    kind = "generation error"


def _causes(err: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA's OutOfMemoryError, Python's MemoryError, or the CPU allocator's failure, anywhere in the chain."""
    for cause in _causes(err):
        if isinstance(cause, MemoryError) or type(cause).__name__ == "OutOfMemoryError":
            return True
        text = str(cause).lower()
        if "out of memory" in text or "can't allocate memory" in text:
            return True
    return False


def failure_kind(err: BaseException) -> str:
    if is_out_of_memory(err):
        return "out of memory"
    if isinstance(err, CellFailure):
        return err.kind
    return type(err).__name__


def one_line(err: BaseException) -> str:
    """The exception's message on one line, shortened; its type when it has no message."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def describe(err: BaseException) -> dict[str, str]:
    kind, message = failure_kind(err), one_line(err)
    return {"kind": kind, "type": type(err).__name__, "message": message, "error": f"{kind}: {message}"}
