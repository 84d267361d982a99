"""The API fixture for the REST tests of jobs, profiles and comparisons."""

from tests.serve.conftest import api  # noqa: F401  (a fixture, found here by pytest)
