#!/usr/bin/env bash
# Alerts and scheduling, process-level:
#  1. a session that LISTENs on settle_alerts receives the JSON payload when a
#     settlement is blocked and when a sanity check fails;
#  2. with pg_cron preloaded, a job scheduled in cron.job runs
#     settle.settle_period and the run it created is there.
set -uo pipefail
db=settle_cron_test
fail=0
check() { if eval "$2"; then echo "ok   - $1"; else echo "FAIL - $1"; fail=1; fi; }
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }

dropdb --if-exists "$db" >/dev/null 2>&1
createdb "$db"
q -c "SET client_min_messages = warning" -c "CREATE EXTENSION settle CASCADE"
q <<'SQL'
SELECT settle.add_reseller('cr', 'Cron Reseller');
SELECT settle.add_customer('cr', 'c1', 'Customer 1');
BEGIN;
SET LOCAL settle.reason = 'cron test';
SELECT settle.set_agreement('cr', '2026-01-01', 'USD');
COMMIT;
SELECT settle.publish_rule('cr', 1, '2026-01-01', 'currency USD
otherwise pay 10%', 'schedule');
INSERT INTO settle.bill_line (reseller_id, line_key, revision, customer_id, content_hash, source_item, billing_account_id,
	billing_period_start, charge_period_start, charge_period_end, charge_category, product_code, billing_currency,
	list_cost, billed_cost)
VALUES (1, 'c1/ecs/oct', 1, 1, sha256('a'), 'PayAsYouGoBill', 'acct', '2026-10-01', '2026-10-01', '2026-11-01',
	'Usage', 'ecs', 'USD', 100, 100),
       (1, 'c1/ecs/oct/eur', 1, 1, sha256('b'), 'PayAsYouGoBill', 'acct', '2026-10-01', '2026-10-02', '2026-10-03',
	'Usage', 'ecs', 'EUR', 10, 10);
SQL

# 1. LISTEN: a second session waits for alerts while the first settles.
out=$(mktemp)
( printf 'LISTEN settle_alerts;\nSELECT pg_sleep(4);\n' | psql -X -d "$db" >"$out" 2>&1 ) &
listener=$!
sleep 1
q -c "SELECT count(*) FROM settle.settle_period('2026-10')" >/dev/null
wait $listener
cat "$out"
check "the listener received an alert for the blocked run" \
	"grep -q 'Asynchronous notification \"settle_alerts\" with payload \"{.*\"alert\": \"run_blocked\".*\"period\": \"2026-10\"' '$out'"
check "and one for the failed sanity check" \
	"grep -q '\"alert\": \"sanity_check\", \"check\": \"blocked_run\"' '$out'"
rm -f "$out"

# 2. pg_cron: schedule the monthly settlement (every minute here), let pg_cron run it.
psql -X -q -At -d postgres -c "CREATE EXTENSION IF NOT EXISTS pg_cron" >/dev/null
q -c "BEGIN; SET LOCAL settle.reason = 'rate for the cron test'; SELECT settle.add_fx_rate('EUR', 'USD', '2026-10-31', 1.08, 'test'); COMMIT;" >/dev/null
jobid=$(psql -X -At -d postgres -c "SELECT cron.schedule_in_database('settle-monthly-test', '* * * * *',
	\$\$SELECT settle.settle_period('2026-10')\$\$, '$db')")
check "the job is scheduled" "[ -n '$jobid' ]"
status=
for _ in $(seq 1 80); do
	status=$(psql -X -At -d postgres -c "SELECT status FROM cron.job_run_details WHERE jobid = $jobid ORDER BY runid DESC LIMIT 1")
	[ "$status" = succeeded ] || [ "$status" = failed ] && break
	sleep 1
done
psql -X -At -d postgres -c "SELECT status, return_message FROM cron.job_run_details WHERE jobid = $jobid"
check "pg_cron ran settle_period successfully" "[ '$status' = succeeded ]"
runs=$(q -c "SELECT count(*) FROM settle.run WHERE period = '2026-10' AND status = 'draft'")
total=$(q -c "SELECT s.total FROM settle.statement s JOIN settle.run r USING (reseller_id, run_id) WHERE r.status = 'draft'")
check "the scheduled run settled October with the new rate: 10.00 + 1.08 = 11.08" "[ '$runs' = 1 ] && [ '$total' = 11.08 ]"
psql -X -q -d postgres -c "SELECT cron.unschedule($jobid)" >/dev/null
dropdb "$db"
exit $fail
