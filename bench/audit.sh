#!/usr/bin/env bash
# Audit-overhead benchmark: ratio of audited to unaudited writes.
# Usage (as root): bash bench/audit.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash test/install-deps.sh
exec bash test/dev.sh psql -X -q -f bench/audit.sql
