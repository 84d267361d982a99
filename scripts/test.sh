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
# The type check runs beside the tests (one core each while the fast tests run); its verdict counts.
# Its cache lives outside the checkout, so a fresh clone re-checks only what changed (mypy compares
# each file's hash, not its path or time, before it trusts the cache).
types_log=$(mktemp)
export MYPY_CACHE_DIR="${MYPY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/deepext/mypy}"
"$venv/mypy" --no-error-summary >"$types_log" 2>&1 &
types_pid=$!
tests_status=0
"$venv/pytest" "$@" || tests_status=$?
types_status=0
wait "$types_pid" || types_status=$?
if [ "$types_status" -ne 0 ]; then
  cat "$types_log" >&2
  echo "mypy found type errors (above)" >&2
fi
rm -f "$types_log"
[ "$tests_status" -ne 0 ] && exit "$tests_status"
exit "$types_status"
