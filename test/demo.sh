#!/usr/bin/env bash
# The README's first command: the main job end to end on bundled sample data.
# Installs what it needs, builds, starts a throwaway cluster with settle and
# pg_cron preloaded, and runs test/demo_run.sh inside it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (installs packages, installs the extension)" >&2; exit 2; }
bash test/install-deps.sh
make -s -j2 >/dev/null
exec 9>/tmp/settle-install.lock
flock 9
make -s install >/dev/null
exec pg_virtualenv -t -v 15 $(bash test/server-options.sh) bash test/demo_run.sh
