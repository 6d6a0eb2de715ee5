"""A crash right after a checkpoint is written, for the resume-equals-uninterrupted tests."""

import catdog.training_loop as loop_module


class Killed(Exception):
    pass


def kill_after_saves(monkeypatch, n):
    """Make the n-th checkpoint save 'crash' right after it is written (monkeypatch.undo() disarms it)."""
    calls = {"n": 0}
    real = loop_module.save_state

    def save_then_maybe_die(path, state):
        real(path, state)
        calls["n"] += 1
        if calls["n"] == n:
            raise Killed
    monkeypatch.setattr(loop_module, "save_state", save_then_maybe_die)
