# Sourced by tests that need a settle build of their own, apart from the
# machine's installed copy (which test/dev.sh replaces under
# /tmp/settle-install.lock): a private installation and a cluster run from it.
#
#   . test/lib/private_pg.sh
#   private_install SRC_TREE DIR     make install of SRC_TREE into DIR beside a
#                                    copy of the postgres binary; prints the
#                                    binary's path
#   private_initdb DATA PORT SOCKDIR initdb, configured like the test clusters
#   private_start BIN DATA LOG       starts the server of BIN on DATA
#   private_stop BIN DATA            stops it (fast)
#
# The server finds its library and share directories relative to its own
# binary, so a binary copied into DIR loads DIR's settle.so and extension
# scripts; everything else in those directories is a link to the system's
# files.  Run as root; the cluster runs as postgres.

PG_BIN=$(pg_config --bindir)
PG_LIB=$(pg_config --pkglibdir)
PG_SHARE=$(pg_config --sharedir)

private_install() {
	local src=$1 dir=$2 f
	make -s -C "$src" -j2 >/dev/null || return 1
	make -s -C "$src" install DESTDIR="$dir" >/dev/null || return 1
	mkdir -p "$dir$PG_BIN" "$dir$PG_LIB" "$dir$PG_SHARE/extension"
	cp "$PG_BIN/postgres" "$dir$PG_BIN/postgres"
	for f in "$PG_LIB"/*; do [ -e "$dir$PG_LIB/$(basename "$f")" ] || ln -s "$f" "$dir$PG_LIB/"; done
	for f in "$PG_SHARE"/*; do [ -e "$dir$PG_SHARE/$(basename "$f")" ] || ln -s "$f" "$dir$PG_SHARE/"; done
	for f in "$PG_SHARE"/extension/*; do
		[ -e "$dir$PG_SHARE/extension/$(basename "$f")" ] || ln -s "$f" "$dir$PG_SHARE/extension/"
	done
	chmod -R a+rX "$dir"
	echo "$dir$PG_BIN/postgres"
}

private_initdb() {
	local data=$1 port=$2 sock=$3
	su postgres -c "$PG_BIN/initdb -D $data -A trust -U postgres --no-sync" >/dev/null || return 1
	cat >> "$data/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$sock'
shared_preload_libraries = 'settle,pg_cron'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 16
fsync = off
jit = off
settle.allow_private_endpoints = on
CONF
}

private_start() {
	local bin=$1 data=$2 log=$3
	su postgres -s /bin/bash -c "exec $PG_BIN/pg_ctl -D $data -p $bin -l $log -w -t 120 start" >/dev/null
}

private_stop() {
	local bin=$1 data=$2
	su postgres -s /bin/bash -c "exec $PG_BIN/pg_ctl -D $data -m fast -w -t 120 stop" >/dev/null
}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
