#!/usr/bin/env bash
# The ingest launcher and its pull workers in a cluster of their own: the
# launcher shows in pg_stat_activity; the pull worker is SIGKILLed at random
# points at least 20 times while pulling a month and after recovery the month
# has zero duplicate and zero missing lines (counts and sums equal the
# source); runs cut short are marked failed; a bad response never kills the
# launcher; SIGHUP reloads its settings; SIGTERM ends a pull worker's
# transfer within a second (its run is then marked failed, 57P01), and a
# launcher ended by SIGTERM is restarted.
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/mock/lib.sh
mock_start
N=${N:-30000}
KILLS=${KILLS:-20}
worker_cluster_start settle_w 0
DB=settle_w
wpid() { q postgres "SELECT pid FROM pg_stat_activity WHERE backend_type = 'settle ingest worker'" 2>/dev/null; }
lpid() { q postgres "SELECT pid FROM pg_stat_activity WHERE backend_type = 'settle ingest launcher'" 2>/dev/null; }
wait_launcher() {	# until a launcher is there (after a restart)
	for _ in $(seq 1 200); do
		p=$(lpid); [ -n "$p" ] && { echo "$p"; return; }
		sleep 0.1
	done
}
wait_worker() {	# until a worker is there (after a restart)
	for _ in $(seq 1 200); do
		p=$(wpid); [ -n "$p" ] && { echo "$p"; return; }
		sleep 0.1
	done
}

wait_launcher >/dev/null
check "launcher visible in pg_stat_activity (backend type, application name)" \
	"$(q postgres "SELECT backend_type || '/' || application_name FROM pg_stat_activity WHERE backend_type = 'settle ingest launcher'")" \
	"settle ingest launcher/settle ingest launcher"

# ---- crash test: SIGKILL during one month's pull
q $DB "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config) VALUES
  ('month', 'alibaba_bss', '$MOCK_URL/m/month-$N/pace/', 'bss_test', '{\"billing_cycle\": \"2026-10\", \"max_results\": 30}')" >/dev/null
curl -s --cacert "$MOCK_CA" "$MOCK_URL/__expected/month-$N" > "$MOCK_DIR/expected.csv"
kills=0
for i in $(seq 1 200); do
	[ $kills -ge $KILLS ] && break
	p=$(wait_worker)
	sleep "0.$(( RANDOM % 9 + 1 ))$(( RANDOM % 10 ))"
	done_pages=$(q $DB "SELECT coalesce(sum(pages_done), 0) FROM settle.ingest_checkpoint WHERE NOT complete" 2>/dev/null)
	complete=$(q $DB "SELECT count(*) FROM settle.ingest_checkpoint WHERE complete AND scope LIKE 'Describe%'" 2>/dev/null)
	[ "$complete" = 1 ] && { echo "# month complete after $kills kills"; break; }
	if [ -n "$p" ] && kill -9 "$p" 2>/dev/null; then
		kills=$((kills + 1))
		echo "# kill $kills at $done_pages pages (worker $p)"
	else
		echo "# no worker to kill (iteration $i)"
	fi
	sleep 0.5
done
# let it finish
for _ in $(seq 1 600); do
	[ "$(q $DB "SELECT count(*) FROM settle.ingest_run WHERE status = 'succeeded'" 2>/dev/null)" -ge 1 ] 2>/dev/null && break
	sleep 0.2
done
check "killed at least 20 times (or the month completed first)" "$([ $kills -ge $KILLS ] && echo yes || echo "only $kills")" "yes"
check "month finished after the crashes" "$(q $DB "SELECT count(*) >= 1 FROM settle.ingest_run WHERE status = 'succeeded'")" "t"
check "zero duplicates, zero missing" \
	"$(q $DB "SELECT count(*), count(DISTINCT line_key), max(revision) FROM settle.bill_line")" "$N|$N|1"
check "sums per account and product equal the source" \
	"$(psql -X -A -t -q -d $DB -v ON_ERROR_STOP=1 <<SQL
CREATE TEMP TABLE expected (a text, p text, n bigint, pretax numeric, gross numeric);
\copy expected FROM '$MOCK_DIR/expected.csv' WITH (FORMAT csv)
SELECT count(*) FROM (
  (SELECT * FROM expected EXCEPT SELECT billing_account_id, product_code, count(*), sum(billed_cost), sum(list_cost) FROM settle.bill_line GROUP BY 1, 2)
  UNION ALL
  (SELECT billing_account_id, product_code, count(*), sum(billed_cost), sum(list_cost) FROM settle.bill_line GROUP BY 1, 2 EXCEPT SELECT * FROM expected)) d;
SQL
)" "0"
check "every raw page's lines are whole (no page without its lines)" \
	"$(q $DB "SELECT count(*) FROM settle.raw_page r WHERE request->>'action' = 'DescribeInstanceBill' AND NOT EXISTS (SELECT 1 FROM settle.bill_line b WHERE b.raw_page_id = r.raw_page_id) AND r.ingest_run_id = (SELECT min(ingest_run_id) FROM settle.ingest_run)")" "0"
check "runs cut short were marked failed at start-up" \
	"$(q $DB "SELECT count(*) >= 1, count(*) FILTER (WHERE status = 'running') FROM settle.ingest_run WHERE error_sqlstate = '57P01' OR status = 'running'")" "t|0"
q $DB "UPDATE settle.connector SET enabled = false WHERE name = 'month'" >/dev/null

# ---- a bad response does not kill the launcher
p=$(wait_launcher)
q $DB "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config) VALUES
  ('bad', 'alibaba_bss', '$MOCK_URL/m/small/truncated/', 'bss_test', '{\"billing_cycle\": \"2026-10\", \"max_results\": 5}')" >/dev/null
for _ in $(seq 1 100); do
	[ "$(q $DB "SELECT count(*) FROM settle.ingest_run r JOIN settle.connector c USING (connector_id) WHERE c.name = 'bad' AND status = 'failed'")" -ge 1 ] && break
	sleep 0.1
done
check "the pull worker records the failed run" "$(q $DB "SELECT error_sqlstate FROM settle.ingest_run r JOIN settle.connector c USING (connector_id) WHERE c.name = 'bad' ORDER BY ingest_run_id LIMIT 1")" "22P02"
check "the launcher survived the bad response" "$(lpid)" "$p"
q $DB "UPDATE settle.connector SET enabled = false WHERE name = 'bad'" >/dev/null

# ---- SIGHUP reloads settings
sed -i 's/^settle.worker_naptime_ms = 200/settle.worker_naptime_ms = 300/' "$PGD/postgresql.conf"
su postgres -c "$BIN/pg_ctl -D $PGD reload" >/dev/null
for _ in $(seq 1 50); do grep -q 'reloaded its settings (naptime 300 ms,' "$MOCK_DIR/server.log" && break; sleep 0.1; done
check "SIGHUP: launcher reloaded settle.worker_naptime_ms" "$(grep -c 'reloaded its settings (naptime 300 ms,' "$MOCK_DIR/server.log")" "1"
check "SIGHUP: same launcher process" "$(lpid)" "$p"

# ---- SIGTERM ends a pull worker's transfer within a second
q $DB "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config) VALUES
  ('trickle', 'alibaba_bss', '$MOCK_URL/m/small/trickle/', 'bss_test', '{\"billing_cycle\": \"2026-10\", \"overview\": false}')" >/dev/null
for _ in $(seq 1 100); do
	[ "$(q postgres "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'settle ingest worker' AND query LIKE 'settle ingest: trickle%'")" = 1 ] && break
	sleep 0.1
done
check "activity shows the transfer" "$(q postgres "SELECT query FROM pg_stat_activity WHERE backend_type = 'settle ingest worker'")" \
	"settle ingest: trickle DescribeInstanceBill 2026-10 page 1"
sleep 0.5
w=$(wpid)
start=$(date +%s%N)
kill -TERM "$w"
while kill -0 "$w" 2>/dev/null; do sleep 0.02; done
ms=$(( ($(date +%s%N) - start) / 1000000 ))
check "SIGTERM ended the transfer within a second ($ms ms)" "$([ $ms -lt 1000 ] && echo yes || echo no)" "yes"
q $DB "UPDATE settle.connector SET enabled = false WHERE name = 'trickle'" >/dev/null
for _ in $(seq 1 100); do
	[ "$(q $DB "SELECT count(*) FROM settle.ingest_run r JOIN settle.connector c USING (connector_id) WHERE c.name = 'trickle' AND status = 'failed'")" -ge 1 ] && break
	sleep 0.1
done
check "the launcher marked the ended pull failed (57P01)" \
	"$(q $DB "SELECT status, error_sqlstate, backend_pid = $w FROM settle.ingest_run r JOIN settle.connector c USING (connector_id) WHERE c.name = 'trickle' ORDER BY ingest_run_id LIMIT 1")" "failed|57P01|t"
check "SIGTERM: same launcher process" "$(lpid)" "$p"
kill -TERM "$p"
for _ in $(seq 1 200); do p2=$(lpid); [ -n "$p2" ] && [ "$p2" != "$p" ] && break; sleep 0.1; done
check "launcher restarted after SIGTERM" "$([ -n "$p2" ] && [ "$p2" != "$p" ] && echo yes || echo no)" "yes"
check "worker restarted after SIGKILL (crash test) — server still up" "$(q postgres "SELECT 1")" "1"
check "secret not in the worker's server log" "$(grep -c -- "$AK_SECRET" "$MOCK_DIR/server.log")" "0"
finish
