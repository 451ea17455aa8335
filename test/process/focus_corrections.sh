#!/usr/bin/env bash
# FOCUS correction rows of a locked period, end to end through the focus_csv
# connector.  September's file (two charges) is imported, settled, approved
# and locked.  October's file then brings October's own charge, a
# correction row (ChargeClass Correction) of September's ecs charge and a
# September charge nobody settled:
#   - the correction row is stored under the period it corrects (2026-09)
#     and settles in October as a correction at the 8% its charge earned:
#     -30.00 x 8% = -2.40;
#   - the late September charge is not guessed: a late_line exception
#     blocks October;
#   - October: commission 50.00 x 8% = 4.00, total 1.60; verify_run true;
#     September's locked statement is unchanged (100 x 8% + 200 x 5% = 18.00).
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/mock/lib.sh
mock_start
DB=settle_focus_corrections
setup_db $DB
HEADER=BillingAccountId,SubAccountId,BillingPeriodStart,ChargePeriodStart,ChargePeriodEnd,ChargeCategory,ChargeClass,BilledCost,ListCost,BillingCurrency,ServiceName,ServiceCategory,RegionId,ResourceId,SkuId,Tags,x_ProductCode
A=3000000000000009
cat > "$MOCK_DIR/sep.csv" <<CSV
$HEADER
$A,$A,2026-09-01T00:00:00Z,2026-09-10T00:00:00Z,2026-09-11T00:00:00Z,Usage,,100.00,100.00,USD,Elastic Compute Service,Compute,ap-southeast-1,i-c-1,ecs.g6.large,,ecs
$A,$A,2026-09-01T00:00:00Z,2026-09-12T00:00:00Z,2026-09-13T00:00:00Z,Usage,,200.00,200.00,USD,Object Storage Service,Storage,ap-southeast-1,b-c-1,oss.std,,oss
CSV
cat > "$MOCK_DIR/oct.csv" <<CSV
$HEADER
$A,$A,2026-10-01T00:00:00Z,2026-10-05T00:00:00Z,2026-10-06T00:00:00Z,Usage,,50.00,50.00,USD,Elastic Compute Service,Compute,ap-southeast-1,i-c-2,ecs.g6.large,,ecs
$A,$A,2026-10-01T00:00:00Z,2026-09-10T00:00:00Z,2026-09-11T00:00:00Z,Usage,Correction,-30.00,-30.00,USD,Elastic Compute Service,Compute,ap-southeast-1,i-c-1,ecs.g6.large,,ecs
$A,$A,2026-10-01T00:00:00Z,2026-09-20T00:00:00Z,2026-09-21T00:00:00Z,Usage,,40.00,40.00,USD,Object Storage Service,Storage,ap-southeast-1,b-c-2,oss.std,,oss
CSV
chmod 644 "$MOCK_DIR"/*.csv
q $DB "SET settle.reason = 'test';
SELECT settle.add_reseller('RC', 'Corrections'), settle.set_agreement('RC', '2020-01-01', 'USD');
SELECT settle.add_customer('RC', 'CC', 'Correction customer'), settle.map_account('$A', 'RC', 'CC');
SELECT settle.publish_rule('RC', (SELECT agreement_id FROM settle.agreement WHERE reseller_id = settle.reseller_id('RC')),
	'2020-01-01', E'currency USD\nwhen product ecs pay 8%\notherwise pay 5%', 'corrections test');
INSERT INTO settle.connector (name, kind, endpoint) VALUES ('sep', 'focus_csv', '$MOCK_DIR/sep.csv'), ('oct', 'focus_csv', '$MOCK_DIR/oct.csv')" >/dev/null
run() { q $DB "SELECT run_id FROM settle.run WHERE reseller_id = settle.reseller_id('RC') AND period = '$1' AND status <> 'superseded'"; }

check "September's file: 2 lines" \
	"$(q $DB "SET settle.allow_insecure_transport = on; SELECT status, lines_new, lines_invalid FROM settle.ingest_now('sep')")" "succeeded|2|0"
q $DB "SELECT count(*) FROM settle.settle_period('2026-09', 'RC')" >/dev/null
SEP=$(run 2026-09)
check "September approved and locked, 18.00" \
	"$(q $DB "SELECT (settle.approve_run($SEP, 'checked')).status; SELECT (settle.lock_run($SEP, 'closed')).status; SELECT total FROM settle.statement WHERE run_id = $SEP")" \
	"$(printf 'approved\nlocked\n18.00')"

check "October's file: 3 lines" \
	"$(q $DB "SET settle.allow_insecure_transport = on; SELECT status, lines_new, lines_invalid FROM settle.ingest_now('oct')")" "succeeded|3|0"
check "the correction row is stored under the period it corrects" \
	"$(q $DB "SELECT billing_period_start, charge_category, charge_class, billed_cost FROM settle.bill_line WHERE charge_class = 'Correction'")" \
	"2026-09-01|Usage|Correction|-30.00"
q $DB "SELECT count(*) FROM settle.settle_period('2026-10', 'RC')" >/dev/null
OCT=$(run 2026-10)
check "October: commission 4.00, corrections -2.40, total 1.60, blocked" \
	"$(q $DB "SELECT s.commission, s.corrections, s.total, r.blocked FROM settle.statement s JOIN settle.run r USING (reseller_id, run_id) WHERE run_id = $OCT")" \
	"4.00|-2.40|1.60|t"
check "the correction line: -30.00 at September's 8%, referring to the charge it corrects" \
	"$(q $DB "SELECT s.kind, s.basis, s.rate = 0.08, s.unrounded = -2.40, s.ref = 'run:$SEP/' || o.line_key
	            FROM settle.settlement_line s
	            JOIN settle.bill_line o ON o.reseller_id = s.reseller_id AND o.resource_id = 'i-c-1' AND o.charge_class IS NULL
	           WHERE s.run_id = $OCT AND s.kind = 'x'")" \
	"x|-30.00|t|t|t"
check "the September charge nobody settled: one late_line exception" \
	"$(q $DB "SELECT e.kind, e.period, e.severity, e.scope_key = 'late:' || b.line_key || '/r1'
	            FROM settle.exception e JOIN settle.bill_line b ON b.resource_id = 'b-c-2'
	           WHERE e.reseller_id = settle.reseller_id('RC') AND e.kind = 'late_line'")" \
	"late_line|2026-10|error|t"
check "October verifies" "$(q $DB "SELECT verified FROM settle.verify_run($OCT)")" "t"
check "September is as it was locked" \
	"$(q $DB "SELECT status, total, (SELECT verified FROM settle.verify_run($SEP)) FROM settle.run JOIN settle.statement USING (reseller_id, run_id) WHERE run_id = $SEP")" \
	"locked|18.00|t"
check "re-importing October's file changes nothing, nor does settling again" \
	"$(q $DB "SET settle.allow_insecure_transport = on; SELECT lines_new, lines_revised FROM settle.ingest_now('oct')"; q $DB "SELECT run_id FROM settle.settle_period('2026-10', 'RC')")" \
	"$(printf '0|0\n%s' "$OCT")"
finish
