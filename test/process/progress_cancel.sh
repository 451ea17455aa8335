#!/usr/bin/env bash
# A settlement that ends in an error (here: cancelled while it runs) leaves no
# phantom in settle.settlement_progress: its backend's slot is cleared when
# the transaction aborts, and the backend itself lives on.
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/mock/lib.sh
DB=settle_progress_cancel
dropdb --if-exists $DB >/dev/null 2>&1
createdb $DB
# one reseller, 600,000 lines: long enough to be seen settling
psql -X -q -v ON_ERROR_STOP=1 -d $DB -v n=600000 -v resellers=1 -v cpr=5000 -f bench/settle_data.sql >/dev/null

psql -X -q -At -d $DB -v VERBOSITY=sqlstate >"/tmp/progress_cancel.$$" 2>&1 <<'SQL' &
SELECT pg_backend_pid() AS pid \gset
\o /tmp/progress_cancel.pid
SELECT :pid;
\o
SELECT count(*) FROM settle.settle_period('2026-10');
SELECT 'after', count(*) FROM settle.settlement_progress WHERE pid = pg_backend_pid();
SQL
client=$!
seen=""
for _ in $(seq 1 300); do
	pid=$(tr -dc 0-9 </tmp/progress_cancel.pid 2>/dev/null)
	if [ -n "$pid" ] && [ "$(q $DB "SELECT count(*) FROM settle.settlement_progress WHERE pid = $pid")" = 1 ]; then
		seen=yes
		break
	fi
	sleep 0.05
done
check "the settlement shows in settlement_progress while it runs" "$seen" yes
q $DB "SELECT pg_cancel_backend($pid)" >/dev/null
wait $client
out=$(cat "/tmp/progress_cancel.$$")
check "the settlement was cancelled (57014)" "$(grep -c 57014 <<<"$out")" 1
check "its own session no longer sees itself settling" "$(grep '^after' <<<"$out" | tr -d ' ')" "after|0"
check "nor does anyone else: no phantom slot for the cancelled backend" \
	"$(q $DB "SELECT count(*) FROM settle.settlement_progress WHERE pid = $pid")" 0
rm -f "/tmp/progress_cancel.$$" /tmp/progress_cancel.pid
dropdb $DB
finish
