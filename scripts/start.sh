#!/usr/bin/env bash
# Set up (idempotently) and start the platform on its embedded defaults: SQLite and the artifact
# store under ~/.deepext (DEEPEXT_HOME), a local Ray. Ctrl-C stops it. Extra arguments go to `deepext up`.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh"
exec "$root/.venv/bin/deepext" up "$@"
