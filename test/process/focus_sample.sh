#!/usr/bin/env bash
# The public FinOps FOCUS 1.0 sample settles: its 942 AWS rows
# (test/fixtures/focus/, amounts of up to 11 decimal places, one Credit row)
# are imported with the focus_csv connector for one reseller whose rule is
# "otherwise pay 5%", settle.settle_period('2024-09') settles every line, and
# the numbers are checked against the file itself, summed here with Python's
# decimal module: the billed total to the last digit, the commission exactly
# 5% of every eligible line (the rule's default "eligible usage, purchase":
# the sample's one Credit row, -2.6137, earns nothing), the statement's
# totals rounded once to the cent (USD, half_even), verify_run true, and the
# server log free of crashes.
#
# Preparation, done here on a copy (the fixture stays as published):
#   - the sample writes absent values as a bare NULL (a database export);
#     FOCUS CSV leaves them empty, so bare NULL fields are emptied;
#   - the sample has no x_ProductCode column and settle's product codes are
#     lower-case identifiers, so x_ProductCode is added: the ServiceName in
#     lower case with every run of other characters as "-" (e.g. "Amazon
#     EC2 Container Registry (ECR)" -> amazon-ec2-container-registry-ecr),
#     and each such product is added to the catalogue under the category of
#     its most frequent ServiceCategory;
#   - each SubAccountId is a customer of the reseller, mapped to its account.
#
# Runs its own cluster (TimeZone UTC: the sample's timestamps carry no zone),
# or the server test/valgrind.sh gives it (PGHOST/PGPORT set and
# FOCUS_SERVER_LOG naming its log).
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/mock/lib.sh
FIXTURE=test/fixtures/focus/focus_sample_aws.csv
W=$(mktemp -d /tmp/settle-focus.XXXXXX)
chmod 755 "$W"
BIN=$(pg_config --bindir)
STOP=
trap 'eval "$STOP"; rm -rf "$W"' EXIT
if [ -n "${FOCUS_SERVER_LOG:-}" ]; then
	LOG=$FOCUS_SERVER_LOG
else
	chown postgres "$W"
	PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	su postgres -c "$BIN/initdb -D $W/data -A trust -U postgres --no-sync" >/dev/null || exit 1
	cat >> "$W/data/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$W'
shared_preload_libraries = 'settle'
timezone = 'UTC'
fsync = off
logging_collector = off
CONF
	LOG=$W/server.log
	su postgres -c "$BIN/pg_ctl -D $W/data -l $LOG -w start" >/dev/null || { cat "$LOG"; exit 1; }
	STOP="su postgres -c '$BIN/pg_ctl -D $W/data -m immediate stop' >/dev/null 2>&1"
	export PGHOST=$W PGPORT=$PORT PGUSER=postgres
fi
log_lines_before=$(wc -l < "$LOG")
DB=settle_focus

# ---- preparation and the expected numbers, from the file alone
python3 - "$FIXTURE" "$W" <<'PY' || exit 1
import collections, csv, decimal, re, sys
src, out = sys.argv[1], sys.argv[2]
decimal.getcontext().prec = 60
with open(src, newline='') as f:
    rows = list(csv.reader(f))
header, rows = rows[0], rows[1:]
col = {n: i for i, n in enumerate(header)}
cats = {'Compute': 'compute', 'Storage': 'storage', 'Networking': 'networking',
        'Databases': 'database', 'Security': 'security'}
def code(service):
    return re.sub(r'[^a-z0-9]+', '-', service.lower()).strip('-')
prepared = []
product_cats = collections.defaultdict(collections.Counter)
accounts = {}
for r in rows:
    r = ['' if v == 'NULL' else v for v in r]
    p = code(r[col['ServiceName']])
    product_cats[(p, r[col['ServiceName']])][cats.get(r[col['ServiceCategory']], 'other')] += 1
    accounts[r[col['SubAccountId']]] = r[col['SubAccountName']]
    prepared.append(r + [p])
with open(out + '/focus.csv', 'w', newline='') as f:
    w = csv.writer(f, lineterminator='\n')
    w.writerow(header + ['x_ProductCode'])
    w.writerows(prepared)
with open(out + '/products.tsv', 'w') as f:
    for (p, name), c in sorted(product_cats.items()):
        f.write('%s\t%s\t%s\n' % (p, c.most_common(1)[0][0], name))
with open(out + '/accounts.tsv', 'w') as f:
    for a, name in sorted(accounts.items()):
        f.write('%s\t%s\n' % (a, name))
billed = [decimal.Decimal(r[col['BilledCost']]) for r in rows]
total = sum(billed)
eligible = sum(decimal.Decimal(r[col['BilledCost']]) for r in rows if r[col['ChargeCategory']] in ('Usage', 'Purchase'))
exact = sum(decimal.Decimal(r[col['BilledCost']]) * decimal.Decimal('0.05')
            for r in rows if r[col['ChargeCategory']] in ('Usage', 'Purchase'))
assert exact == eligible * decimal.Decimal('0.05')
with open(out + '/expected', 'w') as f:
    f.write('lines=%d\n' % len(rows))
    f.write('billed=%s\n' % total)
    f.write('eligible=%s\n' % eligible)
    f.write('exact=%s\n' % exact.normalize())
    cents = lambda x: x.quantize(decimal.Decimal('0.01'), rounding=decimal.ROUND_HALF_EVEN)
    f.write('commission=%s\n' % cents(exact))
    f.write('gross=%s\ncommissionable=%s\n' % (cents(total), cents(eligible)))
    f.write('places=%d\n' % max(len(r[col['BilledCost']].split('.')[1]) for r in rows))
    f.write('products=%d\naccounts=%d\n' % (len(product_cats), len(accounts)))
PY
chmod 644 "$W"/*.csv "$W"/*.tsv
. "$W/expected"
echo "# the file: $lines lines, billed $billed (up to $places decimals), eligible $eligible, 5% = $exact, to the cent $commission"
check "the extract is the sample's 942 AWS rows" "$lines" "942"

dropdb --if-exists "$DB" >/dev/null 2>&1
createdb "$DB" || exit 1
psql -X -q -v ON_ERROR_STOP=1 -d "$DB" >/dev/null <<SQL || exit 1
SET client_min_messages = warning;
CREATE EXTENSION settle CASCADE;
SET settle.reason = 'FOCUS sample test';
CREATE TEMP TABLE products (code text, category text, name text);
\copy products FROM '$W/products.tsv'
CREATE TEMP TABLE accounts (account text, name text);
\copy accounts FROM '$W/accounts.tsv'
SELECT settle.add_reseller('focus', 'FOCUS sample reseller');
SELECT settle.set_agreement('focus', '2024-01-01', 'USD');
SELECT settle.publish_rule('focus', (SELECT agreement_id FROM settle.agreement WHERE reseller_id = settle.reseller_id('focus')),
	'2024-01-01', E'currency USD\notherwise pay 5%', 'flat 5%');
SELECT count(settle.add_product(code, category, name)) FROM products;
SELECT count(settle.add_customer('focus', account, name)) FROM accounts;
SELECT count(settle.map_account(account, 'focus', account)) FROM accounts;
INSERT INTO settle.connector (name, kind, endpoint) VALUES ('focus_sample', 'focus_csv', '$W/focus.csv');
SQL

check "import: all lines new, none invalid" \
	"$(q $DB "SET settle.allow_insecure_transport = on; SELECT status, lines_seen, lines_new, lines_invalid FROM settle.ingest_now('focus_sample')")" \
	"succeeded|$lines|$lines|0"
check "bill lines: count, period, every one mapped to the reseller, no validation error" \
	"$(q $DB "SELECT count(*), min(billing_period_start), max(billing_period_start), count(*) FILTER (WHERE reseller_id = settle.reseller_id('focus')), count(*) FILTER (WHERE validation_errors <> '{}') FROM settle.bill_line")" \
	"$lines|2024-09-01|2024-09-01|$lines|0"
check "bill lines: billed total equals the file's, to the last digit" \
	"$(q $DB "SELECT sum(billed_cost) FROM settle.bill_line")" "$billed"

run=$(q $DB "SELECT run_id FROM settle.settle_period('2024-09')")
check "settle_period('2024-09') returns one run" "$(echo "$run" | wc -w)" "1"
run=${run:-0}
check "the run: every line in and out, not blocked" \
	"$(q $DB "SELECT lines_in, lines_out, blocked, status FROM settle.run WHERE run_id = $run")" \
	"$lines|$lines|f|draft"
check "no exception for the period" \
	"$(q $DB "SELECT count(*) FROM settle.exception WHERE reseller_id = settle.reseller_id('focus')")" "0"
# the lineage holds each basis without the file's trailing zeros: compare the values
check "lineage: one commission line per bill line, basis the billed total" \
	"$(q $DB "SELECT count(*), trim_scale(sum(basis)) FROM settle.settlement_line WHERE run_id = $run AND kind = 'c'")" \
	"$lines|$(q $DB "SELECT trim_scale($billed::numeric)")"
check "lineage: every line earns exactly 5% of its billed amount, the Credit line nothing" \
	"$(q $DB "SELECT count(*) FROM settle.settlement_line l JOIN settle.bill_line b USING (reseller_id, line_key, revision)
	          WHERE l.run_id = $run AND l.kind = 'c'
	            AND l.unrounded = CASE WHEN b.charge_category IN ('Usage', 'Purchase') THEN b.billed_cost * 0.05 ELSE 0 END")" "$lines"
check "lineage: exact commission is 5% of the file's total" \
	"$(q $DB "SELECT trim_scale(sum(unrounded)) FROM settle.settlement_line WHERE run_id = $run")" "$exact"
check "lineage: rounded lines add up to the statement's commission" \
	"$(q $DB "SELECT sum(rounded) FROM settle.settlement_line WHERE run_id = $run")" "$commission"
check "statement: lines, gross charges, commissionable, commission and total (each rounded once to the cent, half_even)" \
	"$(q $DB "SELECT lines, gross_charges, commissionable, commission, total FROM settle.statement WHERE run_id = $run")" \
	"$lines|$gross|$commissionable|$commission|$commission"
check "verify_run: the run re-derives" "$(q $DB "SELECT verified, lines FROM settle.verify_run($run)")" "t|$lines"
check "settling again with unchanged inputs returns the same run" \
	"$(q $DB "SELECT run_id FROM settle.settle_period('2024-09')")" "$run"
check "the server log shows no crashed backend" \
	"$(tail -n +"$((log_lines_before + 1))" "$LOG" | grep -cE 'terminated by signal|was terminated|exited with exit code [^01]|server process .* exited|all server processes terminated')" "0"
finish
