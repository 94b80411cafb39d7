"""How a failed cell's reason is classified and written: one line, the kind first."""

from __future__ import annotations

import pytest

from joulebench.failures import GenerationError, NonFiniteLoss, describe


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (MemoryError(), "out of memory"),
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out of memory"),
        (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
         "out of memory"),
        (NonFiniteLoss("loss became nan"), "non-finite loss"),
        (GenerationError("batch 3"), "generation error"),
        (ValueError("bad shape"), "ValueError"),
    ],
)
def test_kinds(error, kind):
    assert describe(error)["kind"] == kind


def test_an_out_of_memory_cause_wins_over_the_wrapper():
    try:
        try:
            raise MemoryError()
        except MemoryError as cause:
            raise GenerationError("batch 0 failed") from cause
    except GenerationError as err:
        assert describe(err)["kind"] == "out of memory"


def test_the_message_is_one_short_line():
    described = describe(RuntimeError("first line\n  second line " + "x" * 1000))
    assert "\n" not in described["error"] and len(described["message"]) <= 300
    assert described["error"].startswith("RuntimeError: first line second line")
