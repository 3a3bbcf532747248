"""imsa's CLI tunes glibc's allocator, and leaves it alone where the user chose otherwise."""

from __future__ import annotations

import os
import platform
import sys

import pytest

from imsa.allocator import tune_allocator

glibc = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not glibc, reason="mallopt is glibc's; elsewhere the allocator is left as it is")
def test_applied_on_glibc(monkeypatch):
    for name in [k for k in os.environ if k.startswith("MALLOC_") or k == "IMSA_ALLOCATOR"]:
        monkeypatch.delenv(name)
    assert tune_allocator()


@pytest.mark.parametrize("variable, value", [("MALLOC_ARENA_MAX", "2"), ("IMSA_ALLOCATOR", "system")])
def test_the_users_choice_wins(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    assert not tune_allocator()
