#!/usr/bin/env bash
# Connector endpoints cannot reach internal addresses, and never carry
# credentials.  As a settle_admin login (no superuser), with
# settle.allow_private_endpoints off on the server (ALTER SYSTEM + reload):
# pulls from loopback, [::1], IPv4-mapped IPv6, 169.254.169.254, 10.0.0.1
# and "localhost" are refused after name resolution with one SQLSTATE (42501)
# and one message, the same for the mock's open port and a closed one, and
# the mock sees no request; literal internal addresses are refused when a
# connector is written; URLs with user information are refused at insert and
# update whatever the setting (22023), and end up in no table and not in the
# server log; a non-superuser cannot turn the setting on.  With the setting
# back on, the mock pulls work again.
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/mock/lib.sh
mock_start
DB=settle_ingest_endpoints
setup_db $DB
psql -X -q -d postgres -c "ALTER SYSTEM SET settle.secret_file = '$SECRET_FILE'" -c "SELECT pg_reload_conf()" >/dev/null
psql -X -q -d postgres -c "ALTER DATABASE $DB SET settle.ingest_max_attempts = 1" \
	-c "ALTER DATABASE $DB SET settle.http_connect_timeout_ms = 1000" >/dev/null
sleep 0.5
CLOSED=1	# nothing listens on port 1
PW1="pw-$(openssl rand -hex 8)"
PW2="pw-$(openssl rand -hex 8)"

# a settle_admin login, not a superuser
psql -X -q -d $DB -c "CREATE ROLE ep_admin LOGIN PASSWORD 'ep-admin-pw' IN ROLE settle_admin" >/dev/null
as() { PGPASSWORD=ep-admin-pw command psql -X -q -At -h "${PGHOST:-localhost}" -U ep_admin -d $DB -v VERBOSITY=verbose -c "$1" 2>&1; }
if [ "$(as 'SELECT current_user')" != ep_admin ]; then
	as() { PGPASSWORD=ep-admin-pw command psql -X -q -At -h 127.0.0.1 -U ep_admin -d $DB -v VERBOSITY=verbose -c "$1" 2>&1; }
fi
check "logged in as ep_admin, not a superuser" "$(as 'SELECT current_user, usesuper FROM pg_user WHERE usename = current_user')" "ep_admin|f"

MSG_DETAIL="Loopback, private, shared, link-local, unique-local, multicast, reserved and unspecified addresses are refused, written literally or resolved from a name."
refused() { echo "failed|42501|connector endpoint host \"$1\" is not a public address: $MSG_DETAIL"; }
pull() { as "SELECT status, error_sqlstate, error_message FROM settle.ingest_now('$1')" | grep -E '^(failed|succeeded)\|'; }
CFG='{"billing_cycle": "2026-10", "max_results": 5}'

# Connectors stored while the setting is on (the test clusters' default), by
# the admin: literal internal addresses are accepted then.
check "setting on (server default of the test clusters)" "$(as 'SHOW settle.allow_private_endpoints')" "on"
while read -r name url; do
	out=$(as "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config) VALUES ('$name', 'alibaba_bss', '$url', 'bss_test', '$CFG')")
	[ -z "$out" ] || echo "insert $name: $out"
done <<EOF
v4_open https://127.0.0.1:$MOCK_PORT/m/small/v4open/
v4_closed https://127.0.0.1:$CLOSED/m/small/v4closed/
v6_open https://[::1]:$MOCK_PORT/m/small/v6open/
v6_closed https://[::1]:$CLOSED/m/small/v6closed/
mapped_open https://[::ffff:127.0.0.1]:$MOCK_PORT/m/small/mappedopen/
mapped_closed https://[::ffff:127.0.0.1]:$CLOSED/m/small/mappedclosed/
metadata https://169.254.169.254/latest/meta-data/
private10 https://10.0.0.1/
name_open https://localhost:$MOCK_PORT/m/small/nameopen/
name_closed https://localhost:$CLOSED/m/small/nameclosed/
EOF
check "setting on: loopback pull works (the mock's port)" "$(pull v4_open)" "succeeded||"
check "setting on: a name resolving to loopback works" "$(pull name_open)" "succeeded||"
check "setting on: the mock saw the two pulls (4 requests each)" \
	"$(mock_requests /m/small/v4open/) $(mock_requests /m/small/nameopen/)" "4 4"

# The setting off on the server: the admin's pulls are refused.
# (put back on at exit whatever happens: later tests share the cluster)
EXTRA_STOP='psql -X -q -d postgres -c "ALTER SYSTEM RESET settle.allow_private_endpoints" -c "SELECT pg_reload_conf()" >/dev/null 2>&1'
psql -X -q -d postgres -c "ALTER SYSTEM SET settle.allow_private_endpoints = off" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
check "setting off on the server" "$(as 'SHOW settle.allow_private_endpoints')" "off"
check "a non-superuser cannot turn it on (42501)" \
	"$(as 'SET settle.allow_private_endpoints = on' | head -1)" \
	'ERROR:  42501: permission denied to set parameter "settle.allow_private_endpoints"'
check "... nor SET LOCAL" \
	"$(as "BEGIN; SET LOCAL settle.allow_private_endpoints = on; SELECT 1; COMMIT" | head -1)" \
	'ERROR:  42501: permission denied to set parameter "settle.allow_private_endpoints"'

check "127.0.0.1, the mock's open port: refused" "$(pull v4_open)" "$(refused 127.0.0.1)"
check "127.0.0.1, a closed port: the same error" "$(pull v4_closed)" "$(refused 127.0.0.1)"
check "[::1], open port: refused" "$(pull v6_open)" "$(refused '[::1]')"
check "[::1], closed port: the same error" "$(pull v6_closed)" "$(refused '[::1]')"
check "[::ffff:127.0.0.1], open port: refused" "$(pull mapped_open)" "$(refused '[::ffff:127.0.0.1]')"
check "[::ffff:127.0.0.1], closed port: the same error" "$(pull mapped_closed)" "$(refused '[::ffff:127.0.0.1]')"
check "169.254.169.254 (cloud metadata): refused" "$(pull metadata)" "$(refused 169.254.169.254)"
check "10.0.0.1: refused" "$(pull private10)" "$(refused 10.0.0.1)"
check "localhost (resolved to loopback), open port: refused" "$(pull name_open)" "$(refused localhost)"
check "localhost, closed port: the same error" "$(pull name_closed)" "$(refused localhost)"
check "refused pulls are not retried: one request attempted, no retries" \
	"$(q $DB "SELECT count(*), sum(requests), sum(retries) FROM settle.ingest_run WHERE error_sqlstate = '42501'")" "10|10|0"
check "the mock saw no request from the refused pulls" \
	"$(for p in v4open v4closed v6open mappedopen nameopen; do mock_requests /m/small/$p/; done | tr '\n' ' ')" "4 0 0 0 4 "
host=$(hostname)
haddr=$(getent ahostsv4 "$host" | awk 'NR == 1 { print $1 }')
case "$haddr" in
127.* | 10.* | 192.168.* | 172.1[6-9].* | 172.2[0-9].* | 172.3[01].*)
	q $DB "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config) VALUES ('hostname', 'alibaba_bss', 'https://$host:$MOCK_PORT/m/small/hostname/', 'bss_test', '$CFG')" >/dev/null
	check "the machine's name ($host, resolves to $haddr): refused" "$(pull hostname)" "$(refused "$host")" ;;
*) echo "skip - the machine's name does not resolve to an internal IPv4 address" ;;
esac

# Written with the setting off: literal internal addresses are refused at once.
ins() { as "INSERT INTO settle.connector (name, kind, endpoint) VALUES ('$1', 'alibaba_bss', '$2')" | head -1; }
notpub() { echo "ERROR:  42501: connector endpoint host \"$1\" is not a public address"; }
i=0
while read -r url host; do
	i=$((i + 1))
	check "insert refused: $url" "$(ins lit$i "$url")" "$(notpub "$host")"
done <<EOF
https://127.0.0.1:$MOCK_PORT/ 127.0.0.1
https://127.0.0.1:$CLOSED/ 127.0.0.1
https://[::1]:$MOCK_PORT/ [::1]
https://169.254.169.254/ 169.254.169.254
https://10.0.0.1/ 10.0.0.1
https://[::ffff:127.0.0.1]/ [::ffff:127.0.0.1]
https://[::ffff:a9fe:a9fe]/ [::ffff:a9fe:a9fe]
https://2130706433/ 127.0.0.1
https://0x7f.1/ 127.0.0.1
https://100.64.0.1/ 100.64.0.1
https://172.16.5.4/ 172.16.5.4
https://192.168.1.1/ 192.168.1.1
https://0.0.0.0/ 0.0.0.0
https://224.0.0.1/ 224.0.0.1
https://[::]/ [::]
https://[fd00::1]/ [fd00::1]
https://[fe80::1]/ [fe80::1]
https://[ff02::1]/ [ff02::1]
https://[64:ff9b::a00:1]/ [64:ff9b::a00:1]
EOF
check "update to an internal address refused" \
	"$(as "UPDATE settle.connector SET endpoint = 'https://10.1.2.3/' WHERE name = 'private10'" | head -1)" "$(notpub 10.1.2.3)"
check "public literal addresses and names are accepted" \
	"$(as "INSERT INTO settle.connector (name, kind, endpoint) VALUES ('pub4', 'alibaba_bss', 'https://8.8.8.8/'), ('pub6', 'alibaba_bss', 'https://[2001:4860:4860::8888]/'), ('pubname', 'alibaba_bss', 'https://business.aliyuncs.com/'), ('pubmapped', 'alibaba_bss', 'https://[::ffff:8.8.8.8]/')")" ""
check "none of the refused rows was stored" "$(q $DB "SELECT count(*) FROM settle.connector WHERE name LIKE 'lit%' OR endpoint LIKE '%10.1.2.3%'")" "0"

# Credentials in the URL: refused at insert and update, setting on or off.
cred_err='ERROR:  22023: connector endpoint must not contain credentials'
check "user:password@ refused at insert" \
	"$(as "INSERT INTO settle.connector (name, kind, endpoint) VALUES ('cred1', 'alibaba_bss', 'https://reseller:$PW1@business.aliyuncs.com/')" | head -1)" "$cred_err"
check "... the error does not echo the password" \
	"$(as "INSERT INTO settle.connector (name, kind, endpoint) VALUES ('cred1', 'alibaba_bss', 'https://reseller:$PW1@business.aliyuncs.com/')" | grep -c -- "$PW1")" "0"
check "user@ refused" \
	"$(as "INSERT INTO settle.connector (name, kind, endpoint) VALUES ('cred2', 'alibaba_bss', 'https://$PW1@business.aliyuncs.com/')" | head -1)" "$cred_err"
check ":password@ refused" \
	"$(as "INSERT INTO settle.connector (name, kind, endpoint) VALUES ('cred3', 'alibaba_bss', 'https://:$PW1@business.aliyuncs.com/x')" | head -1)" "$cred_err"
check "update adding credentials refused" \
	"$(as "UPDATE settle.connector SET endpoint = 'https://u:$PW1@business.aliyuncs.com/' WHERE name = 'pubname'" | head -1)" "$cred_err"
check "refused for a superuser with the setting on, too" \
	"$(psql -X -q -At -d $DB -v VERBOSITY=verbose -c "SET settle.allow_private_endpoints = on" -c "INSERT INTO settle.connector (name, kind, endpoint) VALUES ('cred4', 'alibaba_bss', 'https://u:$PW1@127.0.0.1:$MOCK_PORT/')" 2>&1 | head -1)" "$cred_err"
# Defence in depth: a row slipped in with the trigger disabled is refused at
# pull time, and no error text shows its password.
psql -X -q -d $DB -c "ALTER TABLE settle.connector DISABLE TRIGGER endpoint_check" \
	-c "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config) VALUES ('slipped', 'alibaba_bss', 'https://u:$PW2@127.0.0.1:$MOCK_PORT/m/small/slipped/', 'bss_test', '$CFG')" \
	-c "ALTER TABLE settle.connector ENABLE TRIGGER endpoint_check" >/dev/null
check "credentials stored behind the trigger's back: pull refused 22023" \
	"$(pull slipped)" \
	"failed|22023|connector endpoint must not contain credentials: The URL has user information (user:password@ or user@) before its host; it is neither stored nor shown."
check "... and the mock saw no request" "$(mock_requests /m/small/slipped/)" "0"

# The passwords are nowhere: not in any settle table, not in the server log.
check "first password in no settle table" \
	"$(q $DB "SELECT count(*) FROM (SELECT to_jsonb(t)::text AS x FROM settle.connector t UNION ALL SELECT to_jsonb(t)::text FROM settle.ingest_run t UNION ALL SELECT to_jsonb(t)::text FROM settle.audit_log t UNION ALL SELECT to_jsonb(t)::text FROM settle.raw_page t UNION ALL SELECT to_jsonb(t)::text FROM settle.ingest_checkpoint t) s WHERE x LIKE '%$PW1%'")" "0"
check "second password not in the run rows" \
	"$(q $DB "SELECT count(*) FROM settle.ingest_run t WHERE to_jsonb(t)::text LIKE '%$PW2%'")" "0"
logs=$(ls /var/log/postgresql/*.log "${PG_CLUSTER_CONF_ROOT:-/nonexistent}"/../log/*.log 2>/dev/null; find /tmp -maxdepth 3 -path '*pg_virtualenv*' -name '*.log' 2>/dev/null)
leak=0
for l in $logs; do grep -q -- "$PW1\|$PW2" "$l" 2>/dev/null && leak=1; done
check "no password in the server log ($(echo $logs | wc -w) log files)" "$leak" "0"
check "the log did see the refused inserts (it is the right log)" \
	"$(for l in $logs; do grep -l "connector endpoint must not contain credentials" "$l" 2>/dev/null; done | wc -l | tr -d ' ' | sed 's/^[1-9][0-9]*$/found/')" "found"

# Back on: the mock pulls work again.
psql -X -q -d postgres -c "ALTER SYSTEM RESET settle.allow_private_endpoints" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
check "setting back on: the loopback pull works again" "$(pull v4_open)" "succeeded||"
finish
