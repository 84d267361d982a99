"""Test job: a user's script with a bug."""

from deepext.train import context

ctx = context.current()
ctx.report(0, loss=1.0)
raise ValueError("the learning rate must be positive")
