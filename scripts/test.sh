#!/usr/bin/env bash
# Set up (idempotently) and run the whole test suite: lint, type check, then every test, fast and
# slow, against SQLite and the local PostgreSQL. Arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
scripts/setup.sh
venv="$root/.venv/bin"

# The PostgreSQL tests need the server the project's machines run; start it if it is down.
if command -v pg_ctlcluster >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi

"$venv/ruff" check deepext apps tests benchmarks examples
"$venv/mypy" --no-error-summary
exec "$venv/pytest" "$@"
