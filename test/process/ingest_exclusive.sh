#!/usr/bin/env bash
# One pull per connector at a time, and a killed settle.ingest_now leaves a
# trace.  In a cluster of its own (settle preloaded, the worker serving the
# test database): while the worker pulls a slow connector, settle.ingest_now
# of that connector fails at once with 55P03 naming the worker, and of another
# connector works; a backend killed (SIGKILL) in the middle of
# settle.ingest_now shows afterwards as a failed run with 57P01.
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/mock/lib.sh
mock_start
worker_cluster_start settle_x 3600000
DB=settle_x
wait_up() { for _ in $(seq 1 300); do q $DB "SELECT 1" >/dev/null 2>&1 && return; sleep 0.1; done; }

# ---- the worker pulls 'slow' (3 s per request); ingest_now of it is refused
q $DB "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config, enabled) VALUES
  ('slow', 'alibaba_bss', '$MOCK_URL/m/small/slowx4/', 'bss_test', '{\"billing_cycle\": \"2026-10\", \"max_results\": 5, \"overview\": false}', true),
  ('other', 'alibaba_bss', '$MOCK_URL/m/refund3/ok/', 'bss_test', '{\"billing_cycle\": \"2026-10\", \"max_results\": 5, \"overview\": false}', false),
  ('victim', 'alibaba_bss', '$MOCK_URL/m/dupes-2/slowx100/', 'bss_test', '{\"billing_cycle\": \"2026-10\", \"max_results\": 5, \"overview\": false}', false)" >/dev/null
for _ in $(seq 1 100); do
	[ "$(q postgres "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'settle ingest worker' AND query LIKE 'settle ingest: slow %'")" = 1 ] && break
	sleep 0.1
done
err=$(psql -X -q -d $DB -v VERBOSITY=verbose -c "SELECT status FROM settle.ingest_now('slow')" 2>&1)
check "ingest_now while the worker pulls: 55P03" "$(echo "$err" | grep -c 'ERROR:  55P03: connector "slow" is being pulled by another process')" "1"
check "the error names the worker" "$(echo "$err" | grep -c 'DETAIL:  .*settle ingest worker')" "1"
check "another connector is pulled meanwhile" "$(q $DB "SELECT status, lines_new FROM settle.ingest_now('other')")" "succeeded|3"
for _ in $(seq 1 300); do
	[ "$(q $DB "SELECT count(*) FROM settle.ingest_run r JOIN settle.connector c USING (connector_id) WHERE c.name = 'slow' AND status <> 'running'")" -ge 1 ] && break
	sleep 0.1
done
check "the worker's pull of 'slow' completed, one run only" \
	"$(q $DB "SELECT count(*), min(status), min(lines_new) FROM settle.ingest_run r JOIN settle.connector c USING (connector_id) WHERE c.name = 'slow'")" "1|succeeded|14"
q $DB "UPDATE settle.connector SET enabled = false WHERE name = 'slow'" >/dev/null

# ---- kill -9 of a backend running ingest_now
psql -X -q -d $DB -c "SELECT settle.ingest_now('victim')" >/dev/null 2>&1 &
victim_psql=$!
for _ in $(seq 1 100); do
	vpid=$(q postgres "SELECT pid FROM pg_stat_activity WHERE query LIKE '%ingest_now(''victim'')%' AND pid <> pg_backend_pid()")
	[ -n "$vpid" ] && break
	sleep 0.1
done
sleep 1
kill -9 "$vpid"
wait $victim_psql
sleep 1
wait_up
check "after the crash, the next pull shows the killed run as failed 57P01" \
	"$(q $DB "SELECT status FROM settle.ingest_now('other')")|$(q $DB "SELECT r.status, r.error_sqlstate, r.backend_pid = $vpid, r.triggered_by FROM settle.ingest_run r JOIN settle.connector c USING (connector_id) WHERE c.name = 'victim'")" \
	"succeeded|failed|57P01|t|sql"
check "ingest_health shows it" \
	"$(q $DB "SELECT last_status, last_error_sqlstate FROM settle.ingest_health WHERE name = 'victim'")" "failed|57P01"
check "recorded once only" "$(q $DB "SELECT status FROM settle.ingest_now('other')")|$(q $DB "SELECT count(*) FROM settle.ingest_run r JOIN settle.connector c USING (connector_id) WHERE c.name = 'victim'")" "succeeded|1"
finish
