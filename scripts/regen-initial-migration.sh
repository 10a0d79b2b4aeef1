#!/usr/bin/env bash
# Before the first release only: regenerate the initial migration from the models.
# After a release, add new revisions with `alembic revision --autogenerate` instead.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
rm -f src/missive/db/migrations/versions/0001_*.py
MISSIVE_SYNC_DATABASE_URL="sqlite:///$scratch/s.db" .venv/bin/alembic revision --autogenerate \
  --rev-id 0001 -m "initial schema" >/dev/null
rm -rf "$scratch"
.venv/bin/ruff check --fix -q src/missive/db/migrations/versions >/dev/null || true
.venv/bin/ruff format -q src/missive/db/migrations/versions
ls src/missive/db/migrations/versions
