#!/usr/bin/env bash
# Helpers for the ingestion process tests (sourced, not run): a throwaway CA
# and server certificate, the mock BSS endpoint, a secret file, and checks.
MOCK_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FAILS=0
CHECKS=0

check() {	# check DESCRIPTION ACTUAL EXPECTED
	CHECKS=$((CHECKS + 1))
	if [ "$2" == "$3" ]; then
		echo "ok   - $1"
	else
		FAILS=$((FAILS + 1))
		echo "FAIL - $1"
		echo "       expected: $3"
		echo "       actual:   $2"
	fi
}

finish() {
	echo "$CHECKS checks, $FAILS failed"
	[ "$FAILS" = 0 ]
}

# mock_start: CA + certificate + keys + secret file + mock server.
# Sets MOCK_DIR, MOCK_PORT, MOCK_CA, MOCK_URL, SECRET_FILE, AK_ID, AK_SECRET.
# Besides bss_test (AK_ID) the secret file names four more AccessKeys, bss_k1
# to bss_k4 (ids LTAI5tMockKeyId1001 to 1004), for tests of several keys.
mock_start() {
	MOCK_DIR=$(mktemp -d /tmp/settle-mock.XXXXXX)
	chmod 755 "$MOCK_DIR"
	(
		cd "$MOCK_DIR"
		openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=settle test CA" \
			-keyout ca.key -out ca.pem >/dev/null 2>&1
		openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
			-keyout server.key -out server.csr >/dev/null 2>&1
		printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' > ext.cnf
		openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
			-extfile ext.cnf -out server.pem >/dev/null 2>&1
		# a second, unrelated CA for the unknown-CA test
		openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=other CA" \
			-keyout other.key -out other.pem >/dev/null 2>&1
	)
	chmod 644 "$MOCK_DIR"/*.pem
	MOCK_CA=$MOCK_DIR/ca.pem
	AK_ID=LTAI5tMockKeyId0001
	AK_SECRET="mockSecret-$(openssl rand -hex 12)"
	echo "$AK_ID:$AK_SECRET" > "$MOCK_DIR/keys"
	SECRET_FILE=$MOCK_DIR/secrets
	{
		echo "# test secrets"
		echo "bss_test=$AK_ID:$AK_SECRET"
		echo "bss_wrong=$AK_ID:not-the-secret"
	} > "$SECRET_FILE"
	local k s
	for k in 1 2 3 4; do
		s="mockSecret$k-$(openssl rand -hex 12)"
		echo "LTAI5tMockKeyId100$k:$s" >> "$MOCK_DIR/keys"
		echo "bss_k$k=LTAI5tMockKeyId100$k:$s" >> "$SECRET_FILE"
	done
	chown postgres "$SECRET_FILE"
	chmod 600 "$SECRET_FILE"
	python3 "$MOCK_HOME/bss_mock.py" --cert "$MOCK_DIR/server.pem" --key "$MOCK_DIR/server.key" \
		--keys "$MOCK_DIR/keys" --portfile "$MOCK_DIR/port" 2>"$MOCK_DIR/mock.log" &
	MOCK_PID=$!
	for _ in $(seq 1 100); do
		[ -f "$MOCK_DIR/port" ] && break
		sleep 0.1
	done
	MOCK_PORT=$(cat "$MOCK_DIR/port")
	MOCK_URL=https://127.0.0.1:$MOCK_PORT
	trap mock_stop EXIT
}

mock_stop() {
	[ -n "${MOCK_PID:-}" ] && kill "$MOCK_PID" 2>/dev/null
	[ -n "${EXTRA_STOP:-}" ] && eval "$EXTRA_STOP"
	rm -rf "$MOCK_DIR"
}

mock_requests() {	# mock_requests /m/ds/fault/
	curl -s --cacert "$MOCK_CA" "$MOCK_URL/__stats$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])'
}

# setup_db DB: a database with settle, resellers, customers, agreements and
# account mappings for the mock's accounts (1199999999999999 and
# 2999999999999999 stay unmapped).
setup_db() {
	local db=$1
	dropdb --if-exists "$db" >/dev/null 2>&1
	createdb "$db"
	psql -X -q -v ON_ERROR_STOP=1 -d "$db" <<SQL
CREATE EXTENSION settle CASCADE;
SET settle.reason = 'test setup';
SELECT settle.add_reseller('R1', 'Reseller One'), settle.add_reseller('R2', 'Reseller Two');
SELECT settle.set_agreement('R1', '2020-01-01', 'CNY'), settle.set_agreement('R2', '2020-01-01', 'CNY');
SELECT settle.add_customer('R1', 'C1', 'Customer One'), settle.add_customer('R1', 'C2', 'Customer Two'),
       settle.add_customer('R2', 'C3', 'Customer Three');
SELECT settle.map_account('2000000000000001', 'R1', 'C1'), settle.map_account('2000000000000002', 'R2', 'C3');
SELECT settle.map_account('110000000000000' || i, CASE WHEN i <= 3 THEN 'R1' ELSE 'R2' END,
                          CASE WHEN i <= 2 THEN 'C1' WHEN i = 3 THEN 'C2' ELSE 'C3' END)
  FROM generate_series(1, 5) i;
ALTER DATABASE $db SET settle.ca_file = '$MOCK_CA';
ALTER DATABASE $db SET settle.ingest_retry_base_ms = 20;
ALTER DATABASE $db SET settle.ingest_requests_per_second = 0;
SQL
}

q() {	# q DB SQL  -> unaligned result
	psql -X -A -t -q -v ON_ERROR_STOP=1 -d "$1" -c "$2"
}

# worker_cluster_start DB RETRY_AFTER_MS [SETTINGS] (after mock_start): a
# private cluster of its own (settle preloaded, its ingest launcher serving
# DB, retries after RETRY_AFTER_MS, then SETTINGS: more postgresql.conf
# lines), for tests that kill or restart the server; stopped with the mock.
# Sets BIN, PGD, PORT and PGHOST/PGPORT/PGUSER, and creates DB with setup_db.
worker_cluster_start() {
	local db=$1 retry=$2 more=${3:-}
	BIN=$(pg_config --bindir)
	PGD=$MOCK_DIR/pgdata
	PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	install -d -o postgres "$PGD"
	chown postgres "$MOCK_DIR"
	su postgres -c "$BIN/initdb -D $PGD -A trust -U postgres" >/dev/null
	cat >> "$PGD/postgresql.conf" <<CONF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$MOCK_DIR'
shared_preload_libraries = 'settle'
settle.database = '$db'
settle.worker_naptime_ms = 200
settle.worker_retry_after_ms = $retry
settle.secret_file = '$SECRET_FILE'
settle.ca_file = '$MOCK_CA'
settle.allow_private_endpoints = on
settle.ingest_retry_base_ms = 20
settle.ingest_requests_per_second = 0
restart_after_crash = on
logging_collector = off
$more
CONF
	su postgres -c "$BIN/pg_ctl -D $PGD -l $MOCK_DIR/server.log -w start" >/dev/null
	EXTRA_STOP="su postgres -c '$BIN/pg_ctl -D $PGD -m immediate stop' >/dev/null 2>&1"
	export PGHOST=$MOCK_DIR PGPORT=$PORT PGUSER=postgres
	setup_db "$db"
}
