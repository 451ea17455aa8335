#!/usr/bin/env bash
# The one test command: install packages, build warning-free, install the
# extension, start a throwaway cluster with settle and pg_cron preloaded, and
# run every suite (pg_regress, pgTAP, isolation, process-level).  Ends with the
# line "N passed, N failed" and a non-zero exit status when anything failed.
#
# Usage: test/run_all.sh [suite ...]   suites: regress pgtap isolation process citus
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (installs packages, installs the extension)" >&2; exit 2; }
bash test/install-deps.sh
make -s -j2 >/dev/null
# One installed copy of settle.so per machine: serialise install + test runs.
exec 9>/tmp/settle-install.lock
flock 9
make -s install >/dev/null
exec pg_virtualenv -t -v 15 $(bash test/server-options.sh) bash test/run_suites.sh "$@"
