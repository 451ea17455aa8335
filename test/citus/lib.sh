# Sourced by test/citus/run.sh: a Citus coordinator and two workers on
# loopback, each its own throwaway PostgreSQL 15 cluster under one folder,
# with citus and settle preloaded.  citus_start DIR starts them and exports
# CITUS_PORTS (coordinator first); citus_stop stops them.
. "$(dirname "${BASH_SOURCE[0]}")/../lib/private_pg.sh"
BIN=$PG_BIN
# CITUS_LIBDIR overrides where citus.so is looked for (to try the skip path)
citus_installed() { [ -f "${CITUS_LIBDIR:-$(pg_config --pkglibdir)}/citus.so" ]; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
citus_start() {	# $1 = folder (created; owned by postgres)
	CITUS_DIR=$1; CITUS_PORTS=()
	chown postgres "$CITUS_DIR"
	local n port
	for n in coord w1 w2; do
		port=$(free_port)
		private_initdb "$CITUS_DIR/$n" "$port" "$CITUS_DIR" || return 1
		# the test clusters' settings, then what a Citus node needs (later lines win)
		cat >> "$CITUS_DIR/$n/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
shared_preload_libraries = 'citus,settle'
timezone = 'UTC'
synchronous_commit = off
logging_collector = off
CONF
		su postgres -c "$BIN/pg_ctl -D $CITUS_DIR/$n -l $CITUS_DIR/$n.log -w start" >/dev/null \
			|| { cat "$CITUS_DIR/$n.log"; return 1; }
		CITUS_PORTS+=("$port")
	done
	export CITUS_DIR PGHOST=$CITUS_DIR PGUSER=postgres
}
citus_stop() {
	local n
	for n in coord w1 w2; do
		[ -d "${CITUS_DIR:-/nonexistent}/$n" ] && su postgres -c "$BIN/pg_ctl -D $CITUS_DIR/$n -m immediate stop" >/dev/null 2>&1
	done
	return 0
}
# node psql: cq INDEX args... (0 coordinator, 1 and 2 workers)
cq() { local i=$1; shift; psql -X -q -v ON_ERROR_STOP=1 -p "${CITUS_PORTS[$i]}" "$@"; }
