#!/usr/bin/env bash
# Developer helper: build, install and run a command inside a throwaway cluster
# configured like the test clusters, holding the machine-wide install lock so
# that parallel work trees do not replace settle.so under each other.
#   bash test/dev.sh psql -f x.sql
#   SETTLE_SERVER_OPTS="-o shared_buffers=1GB" bash test/dev.sh ...   # more server settings
set -euo pipefail
cd "$(dirname "$0")/.."
make -s -j2 >/dev/null
exec 9>/tmp/settle-install.lock
flock 9
make -s install >/dev/null
exec pg_virtualenv -t -v 15 $(bash test/server-options.sh) ${SETTLE_SERVER_OPTS:-} "$@"
