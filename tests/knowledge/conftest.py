"""The API fixture of tests/serve (the app in-process over users of every role in project `p`)."""

from tests.serve.conftest import api  # noqa: F401  (a fixture, found here by pytest)
