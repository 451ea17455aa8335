#!/usr/bin/env bash
# Memory safety harness: runs the settlement engine's pgTAP suites, the rule
# type's text and binary input on mutated inputs, and the FinOps FOCUS sample
# settlement (test/process/focus_sample.sh) in a throwaway PostgreSQL 15
# cluster whose postmaster (and so every backend and background worker it
# forks) runs under Valgrind memcheck, then reads Valgrind's logs.  Passes
# when no error has a settle.so frame in its stacks, no invalid read, write
# or free happened anywhere, no backend crashed, and the suites pass.
# About 10 minutes on 2 cores: not part of `make test`.  Needs no install
# lock: it installs this work tree's build into a private directory.
#
#   bash test/valgrind.sh
#   VALGRIND_SUITES="rules_eval.sql" bash test/valgrind.sh   # other pgTAP files
#   VALGRIND_PARTS="rules focus" bash test/valgrind.sh       # parts: pgtap rules focus
#   VALGRIND_OPTS=--track-origins=yes bash test/valgrind.sh  # more memcheck options
#   VALGRIND_KEEP=1 bash test/valgrind.sh                    # keep logs and data
#
# PostgreSQL from Debian is not built with USE_VALGRIND: memory handed out by
# palloc inside a memory context's blocks is one malloc'd block to memcheck,
# so a read past a palloc'd chunk within its block, or of a chunk already
# pfree'd, or of a context that was reset or went back to the context free
# list, is not seen.  What memcheck does see: reads and writes outside
# malloc'd blocks (past a block's end, of a block freed when a context was
# deleted), frees of bad pointers, and decisions or system calls on
# uninitialised bytes.  test/valgrind/settle.supp silences the known false
# positives of such a build; nothing in it names settle code.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
[ "$(id -u)" = 0 ] || { echo "run as root (runs the cluster as postgres)" >&2; exit 2; }
command -v valgrind >/dev/null || {
	echo "installing valgrind"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind >/dev/null
}
for p in postgresql-15-pgtap postgresql-15-cron libtap-parser-sourcehandler-pgtap-perl; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || { bash test/install-deps.sh; break; }
done

PARTS=${VALGRIND_PARTS:-"pgtap rules focus"}
SUITES=${VALGRIND_SUITES:-"settle_month.sql settle_history.sql settle_defects.sql settle_f9_tier_below_zero.sql settle_f10_period_cap.sql settle_f11_line_floor.sql settle_f12_unconverted_refund.sql late_lines.sql rules_eval.sql workflow.sql settle_volume.sql"}
BIN=$(pg_config --bindir)
LIB=$(pg_config --pkglibdir)
W=$(mktemp -d /tmp/settle-valgrind.XXXXXX)
chmod 755 "$W"
mkdir "$W/vg" "$W/io"
chown postgres "$W" "$W/vg" "$W/io"

# A private installation (test/lib/private_pg.sh): this work tree's settle
# beside a copy of the postgres binary, so the server loads this settle.so
# while the machine's installed copy (test/dev.sh, under
# /tmp/settle-install.lock) may change: the long run holds no lock.
. test/lib/private_pg.sh
IPOSTGRES=$(private_install . "$W/inst") || exit 1
ILIB=$W/inst$LIB
PORT=$(free_port)
export PGHOST=$W PGPORT=$PORT PGUSER=postgres
VG_PID=
stop_server() {
	[ -n "$VG_PID" ] || return 0
	su postgres -c "$BIN/pg_ctl -D $W/data -m fast -t 600 -w stop" >/dev/null 2>&1
	wait "$VG_PID" 2>/dev/null
	VG_PID=
}
cleanup() {
	stop_server
	if [ -n "${VALGRIND_KEEP:-}" ]; then echo "# kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

su postgres -c "$BIN/initdb -D $W/data -A trust -U postgres --no-sync" >/dev/null || exit 1
cat >> "$W/data/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$W'
shared_preload_libraries = 'settle,pg_cron'
cron.database_name = 'postgres'
max_worker_processes = 16
max_connections = 20
shared_buffers = 64MB
fsync = off
jit = off
autovacuum = off
settle.allow_private_endpoints = on
statement_timeout = 0
log_line_prefix = '%m [%p] '
logging_collector = off
CONF

# The postmaster under memcheck; forked children inherit it.  Each process
# logs to its own file; an error is framed by markers for the parser below.
echo "== starting postgres under valgrind ($W)"
su postgres -s /bin/bash -c "exec valgrind --tool=memcheck --quiet --trace-children=yes \
	--leak-check=no --num-callers=40 --gen-suppressions=all \
	--error-markers=VALGRINDERROR-BEGIN,VALGRINDERROR-END --fullpath-after= \
	--suppressions=$ROOT/test/valgrind/settle.supp \
	--log-file=$W/vg/%p.log \
	$IPOSTGRES -D $W/data" >"$W/server.log" 2>&1 &
VG_PID=$!
for _ in $(seq 1 600); do
	pg_isready -q && break
	sleep 0.5
done
pg_isready -q || { echo "server did not start"; tail -30 "$W/server.log"; exit 1; }

pass=0; fail=0; failed=()
result() {	# result NAME STATUS
	if [ "$2" = 0 ]; then pass=$((pass + 1)); echo "ok   $1"
	else fail=$((fail + 1)); failed+=("$1"); echo "FAIL $1"; fi
}

# ---- pgTAP suites of the engine
createdb settle_vg
psql -q -X -v ON_ERROR_STOP=1 -d settle_vg -c 'SET client_min_messages = warning' \
	-c 'CREATE EXTENSION settle CASCADE' -c 'CREATE EXTENSION pgtap' >/dev/null || exit 1
bpid=$(psql -X -At -d settle_vg -c "SELECT pg_backend_pid() FROM settle.rule_currency('currency USD otherwise pay 1%')")
grep -q "$ILIB/settle.so" "/proc/$bpid/maps" || { echo "the server did not load $ILIB/settle.so"; exit 1; }
[[ " $PARTS " == *" pgtap "* ]] || SUITES=
for f in $SUITES; do
	echo "== pgTAP $f"
	timeout 3600 pg_prove -q -d settle_vg "test/pgtap/$f" >"$W/tap.out" 2>&1
	st=$?
	[ "$st" = 0 ] || tail -30 "$W/tap.out"
	result "pgtap $f" "$st"
done

# ---- the rule type's input functions on mutated inputs
if [[ " $PARTS " == *" rules "* ]]; then
	echo "== rule text and binary input on mutated seeds"
	python3 test/valgrind/rule_inputs.py test/fuzz/seeds "$W/io" settle_vg >"$W/io.out" 2>&1
	st=$?
	tail -5 "$W/io.out"
	result "rule input (text and binary)" "$st"
fi

# ---- the FOCUS sample settles (the data that crashed the server)
if [[ " $PARTS " == *" focus "* ]]; then
	echo "== FOCUS sample"
	FOCUS_SERVER_LOG=$W/server.log timeout 3600 bash test/process/focus_sample.sh >"$W/focus.out" 2>&1
	st=$?
	tail -15 "$W/focus.out"
	result "process focus_sample.sh" "$st"
fi

echo "== stopping the server (valgrind writes its logs at exit)"
stop_server

# ---- the logs
if grep -E "terminated by signal|exited with exit code [^01]" "$W/server.log"; then
	result "no backend crashed" 1
else
	result "no backend crashed" 0
fi
python3 test/valgrind/parse_logs.py "$W/vg" src
result "valgrind: no memory error in settle.so, no invalid access anywhere" $?

[ ${#failed[@]} = 0 ] || echo "failed: ${failed[*]}"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
