#!/usr/bin/env bash
# settle on Citus: a coordinator and two workers on loopback (three throwaway
# PostgreSQL 15 clusters with citus and settle preloaded), against a
# single-node run of the same data.  Needs settle installed (test/dev.sh or
# test/run_all.sh do it) and Citus installed (docs/scale-out.md); without
# Citus it prints "SKIPPED: Citus is not installed" and exits 77, which
# test/run_suites.sh counts as skipped, never as passed.
#
# What it checks today (docs/scale-out.md, "What runs on Citus"):
#  1. settle.distribute() without partial refuses (0A000): settle as a whole
#     does not run distributed yet; partial => true distributes bill_line and
#     settlement_line by reseller_id (co-located) and delegates the engine.
#  2. The demo month is ingested from the mock BSS endpoint on a single node
#     (database "single" of the coordinator's server, without Citus) and
#     settled with settle_period.  Its bill lines are copied into the
#     distributed bill_line (so into the workers' shards).
#  3. For each reseller, settle._settle_reseller called on the coordinator
#     is delegated to the worker holding the reseller's shards, reads the
#     lines from the shard and writes the lineage into the co-located shard:
#     its fingerprints, line counts and totals equal the single-node run's,
#     and so does every lineage row.
#  4. Called on a node without the reseller's shard, the engine stops with
#     55000 (it never reads the empty distributed table); ingestion on the
#     distributed bill_line stops with 0A000.
#  5. The audit reason set on the coordinator (SET LOCAL or set_config)
#     does not reach the workers: a query in both workers' shards sees none.
# Scaffold, until the configuration tables are reference tables: the
# engine's configuration (resellers, customers, agreements, rules, FX rates)
# is copied into each worker's own settle tables from the single node.
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/citus/lib.sh
if ! citus_installed; then
	echo "SKIPPED: Citus is not installed (${CITUS_LIBDIR:-$(pg_config --pkglibdir)}/citus.so is absent; docs/scale-out.md says how to install it)"
	exit 77
fi
. test/mock/lib.sh
W=$(mktemp -d /tmp/settle-citus.XXXXXX)
chmod 755 "$W"
# CITUS_KEEP=1 leaves the clusters running (and says where) to look into a failure
cleanup() {
	mock_stop
	if [ -n "${CITUS_KEEP:-}" ]; then echo "kept: $W, ports ${P[*]}"; else citus_stop; rm -rf "$W"; fi
}
trap cleanup EXIT
citus_start "$W" || exit 1
P=("${CITUS_PORTS[@]}")
val() { local i=$1 db=$2; shift 2; psql -X -q -At -v ON_ERROR_STOP=1 -p "${P[$i]}" -d "$db" -c "$1"; }
run() { local i=$1 db=$2; shift 2; psql -X -q -v ON_ERROR_STOP=1 -p "${P[$i]}" -d "$db" "$@"; }
node_of() {	# node_of TABLE RESELLER_ID -> the port of the node holding the reseller's shard
	val 0 postgres "SELECT n.nodeport FROM pg_dist_placement pl JOIN pg_dist_node n USING (groupid)
	                 WHERE pl.shardid = get_shard_id_for_distribution_column('$1', $2::bigint)"
}
sqlstate() { local i=$1 db=$2; psql -X -q -At -p "${P[$i]}" -d "$db" -v VERBOSITY=verbose -c "$3" 2>&1 | sed -n 's/^ERROR: *\([0-9A-Z]\{5\}\):.*/\1/p' | head -1; }

# ---- the cluster: citus everywhere, workers added, settle created once (Citus propagates it)
for i in 0 1 2; do run "$i" postgres -c 'CREATE EXTENSION citus' >/dev/null || exit 1; done
run 0 postgres -c "SELECT citus_set_coordinator_host('127.0.0.1', ${P[0]})" \
	-c "SELECT citus_add_node('127.0.0.1', ${P[1]})" -c "SELECT citus_add_node('127.0.0.1', ${P[2]})" >/dev/null || exit 1
run 0 postgres -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION settle CASCADE' || exit 1
check "settle is created on both workers by the coordinator" \
	"$(val 1 postgres "SELECT extversion FROM pg_extension WHERE extname = 'settle'")/$(val 2 postgres "SELECT extversion FROM pg_extension WHERE extname = 'settle'")" \
	"$(sed -n "s/^default_version = '\(.*\)'/\1/p" settle.control)/$(sed -n "s/^default_version = '\(.*\)'/\1/p" settle.control)"

# ---- 1. settle.distribute()
check "distribute() without partial refuses: settle does not run distributed as a whole yet" \
	"$(sqlstate 0 postgres 'SELECT * FROM settle.distribute()')" "0A000"
check "distribute(shard_count => 0) is refused" "$(sqlstate 0 postgres 'SELECT * FROM settle.distribute(0, true)')" "22023"
check "distribute(partial => true): lines distributed, engine delegated" \
	"$(val 0 postgres "SELECT string_agg(object || ': ' || placement, '; ') FROM settle.distribute(shard_count => 4, partial => true)")" \
	"settle.bill_line: distributed by reseller_id; settle.settlement_line: distributed by reseller_id, co-located with settle.bill_line; settle._settle_reseller: delegated by reseller_id to the node of settle.bill_line's shard"
check "bill_line and settlement_line share one colocation group, 4 shards each, on both workers" \
	"$(val 0 postgres "SELECT count(DISTINCT p.colocationid) || '/' || count(*) FILTER (WHERE p.logicalrelid = 'settle.bill_line'::regclass)
	                       || '/' || count(*) FILTER (WHERE p.logicalrelid = 'settle.settlement_line'::regclass)
	                     FROM pg_dist_partition p JOIN pg_dist_shard s USING (logicalrelid)
	                    WHERE p.logicalrelid IN ('settle.bill_line'::regclass, 'settle.settlement_line'::regclass)")/$(val 0 postgres "SELECT count(DISTINCT n.nodeport) FROM pg_dist_shard s JOIN pg_dist_placement pl USING (shardid)
	                    JOIN pg_dist_node n USING (groupid) WHERE s.logicalrelid = 'settle.bill_line'::regclass AND n.nodeport <> ${P[0]}")" \
	"1/4/4/2"
check "a second distribute() is refused" "$(sqlstate 0 postgres 'SELECT * FROM settle.distribute(4, true)')" "55000"

# ---- 2. the single-node run: database "single", no Citus in it
run 0 postgres -c 'SET client_min_messages = warning' -c 'CREATE DATABASE single' >/dev/null || exit 1
run 0 single -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION settle CASCADE' >/dev/null || exit 1
check "database single has no Citus" "$(val 0 single "SELECT count(*) FROM pg_extension WHERE extname = 'citus'")" "0"
# the shape of settle._settle_reseller's record, to read one back from its text
run 0 single -c "CREATE TYPE public.settle_result AS (unchanged boolean, input_fingerprint bytea, output_fingerprint bytea,
	lines_in bigint, lines_out bigint, gross_charges numeric, commissionable numeric, commission numeric, refunds numeric,
	corrections numeric, adjustments numeric, total numeric, carry_forward_in_out numeric, carry_forward_out numeric,
	net_payout numeric, problems jsonb)" >/dev/null || exit 1
run 0 single -f test/fixtures/sample_model.sql >/dev/null || exit 1
run 0 single -f test/fixtures/sample_rules.sql >/dev/null || exit 1
mock_start
trap cleanup EXIT	# (mock_start sets its own)
run 0 single -c "ALTER SYSTEM SET settle.secret_file = '$SECRET_FILE'" -c "ALTER SYSTEM SET settle.ca_file = '$MOCK_CA'" \
	-c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
run 0 single -c "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config, enabled)
                 VALUES ('alibaba-intl', 'alibaba_bss', '$MOCK_URL/m/demo/ok/', 'bss_test',
                         '{\"billing_cycle\": \"2026-10\", \"max_results\": 25}', false)" >/dev/null || exit 1
check "single node: the demo month is ingested" "$(val 0 single "SELECT status FROM settle.ingest_now('alibaba-intl')")" "succeeded"
lines=$(val 0 single "SELECT count(*) FROM settle.bill_line")
check "single node: the demo month has bill lines" "$([ "$lines" -ge 80 ] && echo yes || echo "no ($lines)")" "yes"
val 0 single "SELECT count(*) FROM settle.settle_period('2026-10')" >/dev/null || exit 1

# ---- the Citus side: the same configuration, the same bill lines
# (a model of the scaffold above: each node's own configuration tables)
for i in 0 1 2; do
	run "$i" postgres -f test/fixtures/sample_model.sql >/dev/null || exit 1
	run "$i" postgres -f test/fixtures/sample_rules.sql >/dev/null || exit 1
done
cols="reseller_id, line_key, revision, customer_id, content_hash, raw_page_id, connector_id, source_item, source_record_id,
      billing_account_id, sub_account_id, billing_period_start, charge_period_start, charge_period_end, charge_category,
      charge_class, product_code, service_name, service_category, sku_id, region_id, resource_id, billing_currency,
      list_cost, discount, coupon_deduction, billed_cost, amount_paid, original_line_key, tags, validation_errors, ingested_at"
psql -X -q -p "${P[0]}" -d single -c "\\copy (SELECT $cols FROM settle.bill_line ORDER BY reseller_id, line_key, revision) TO '$W/lines.copy'" || exit 1
psql -X -q -v ON_ERROR_STOP=1 -p "${P[0]}" -d postgres -c "\\copy settle.bill_line ($cols) FROM '$W/lines.copy'" || exit 1
check "every line is in a worker's shard of the distributed bill_line" \
	"$(val 0 postgres "SELECT sum(result::bigint) FROM run_command_on_shards('settle.bill_line', 'SELECT count(*) FROM %s')")/$(val 0 postgres "SELECT count(*) FROM pg_dist_shard s JOIN pg_dist_placement pl USING (shardid)
	                    JOIN pg_dist_node n USING (groupid) WHERE s.logicalrelid = 'settle.bill_line'::regclass AND n.nodeport = ${P[0]}")" \
	"$lines/0"

# ---- how the audit reason can reach the workers (docs/scale-out.md, "What
# remains", 1): a query on bill_line runs on both workers (inet_server_port()
# and current_setting() are evaluated in the shards' queries).  Neither SET
# LOCAL settle.reason nor set_config(), which settle's functions use, reaches
# them: the reason must travel with the change itself.
reason_seen() {	# reason_seen SETTING-STATEMENTS -> "port=reason" of every worker that ran the query, sorted
	psql -X -q -At -v ON_ERROR_STOP=1 -p "${P[0]}" -d postgres -c "BEGIN; $1
		SELECT string_agg(w, ' ' ORDER BY w) FROM (SELECT DISTINCT inet_server_port() || '=' || coalesce(nullif(current_setting('settle.reason', true), ''), '-') AS w
		                                              FROM settle.bill_line) q; COMMIT;" | grep -v '^$' | tail -1
}
workers_with() { printf '%s\n' "${P[1]}=$1" "${P[2]}=$1" | sort | paste -sd' '; }
check "audit reason: SET LOCAL settle.reason on the coordinator does not reach the workers (they see none)" \
	"$(reason_seen "SET LOCAL settle.reason = 'fx correction';")" "$(workers_with -)"
check "audit reason: set_config(), as settle's functions set it, does not either, even with citus.propagate_set_commands = 'local'" \
	"$(reason_seen "SET LOCAL citus.propagate_set_commands = 'local'; SELECT set_config('settle.reason', 'applied in run 1', true);")" "$(workers_with -)"

# ---- 3. each reseller settled through the coordinator, on its worker
for rid in $(val 0 single "SELECT reseller_id FROM settle.run WHERE period = '2026-10' ORDER BY 1"); do
	code=$(val 0 single "SELECT code FROM settle.reseller WHERE reseller_id = $rid")
	run_id=$(val 0 single "SELECT run_id FROM settle.run WHERE reseller_id = $rid AND period = '2026-10' AND status = 'draft'")
	port=$(node_of settle.bill_line "$rid")
	expect=$(val 0 single "SELECT encode(r.input_fingerprint, 'hex'), encode(r.output_fingerprint, 'hex'), r.lines_in, r.lines_out,
	                              s.gross_charges, s.commissionable, s.commission, s.refunds, s.corrections, s.adjustments,
	                              s.total, s.carry_forward_out, s.net_payout
	                         FROM settle.run r JOIN settle.statement s USING (reseller_id, run_id) WHERE r.run_id = $run_id")
	# a plain top-level call, which Citus delegates to the node of the
	# reseller's shard; its record is read back through a type of the same shape
	rec=$(val 0 postgres "SELECT settle._settle_reseller($rid, '2026-10', $run_id, NULL, 0, NULL)")
	got=$(val 0 single "SELECT encode(x.input_fingerprint, 'hex'), encode(x.output_fingerprint, 'hex'), x.lines_in, x.lines_out,
	                           x.gross_charges, x.commissionable, x.commission, x.refunds, x.corrections, x.adjustments,
	                           x.total, x.carry_forward_out, x.net_payout
	                      FROM (SELECT (\$r\$$rec\$r\$::public.settle_result).*) x")
	check "$code: fingerprints, line counts and totals on worker :$port equal the single node's" "$got" "$expect"
	psql -X -q -p "${P[0]}" -d single -c "\\copy (SELECT * FROM settle.settlement_line WHERE run_id = $run_id ORDER BY line_key, kind) TO '$W/single.$rid'"
	psql -X -q -p "${P[0]}" -d postgres -c "\\copy (SELECT * FROM settle.settlement_line WHERE run_id = $run_id ORDER BY line_key, kind) TO '$W/citus.$rid'"
	check "$code: every lineage row equals the single node's ($(wc -l < "$W/single.$rid") rows)" \
		"$(cmp -s "$W/single.$rid" "$W/citus.$rid" && echo same || diff "$W/single.$rid" "$W/citus.$rid" | head -3)" "same"
	check "$code: the lineage is in the worker's shard, co-located with the lines" \
		"$(node_of settle.settlement_line "$rid")" "$port"
	check "$code: that is a worker" "$([ -n "$port" ] && [ "$port" != "${P[0]}" ] && echo yes)" "yes"
	# a call Citus does not delegate (the engine inside a larger query) runs
	# where it is made: on a node without the reseller's shard it stops
	for i in 0 1 2; do
		[ "${P[$i]}" = "$port" ] && continue
		check "$code: the engine run on :${P[$i]}, without the reseller's shard, stops with 55000" \
			"$(sqlstate "$i" postgres "SELECT (settle._settle_reseller($rid, '2026-10', $run_id + 1000, NULL, 0, NULL)).lines_out FROM (VALUES (1)) v(x)")" "55000"
	done
done

# ---- 4. what does not run distributed yet stops, never writes into the empty shell
run 0 postgres -c "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config, enabled)
                   VALUES ('alibaba-intl', 'alibaba_bss', '$MOCK_URL/m/demo/ok/', 'bss_test',
                           '{\"billing_cycle\": \"2026-10\", \"max_results\": 25}', false)" >/dev/null || exit 1
st=$(val 0 postgres "SELECT * FROM settle.ingest_now('alibaba-intl')" 2>&1)
check "ingestion into the distributed bill_line fails clearly (ingest run failed, lines untouched)" \
	"$(echo "$st" | grep -q 'distributed by Citus' && echo refused)/$(val 0 postgres "SELECT count(*) FROM settle.bill_line")" "refused/$lines"

finish
