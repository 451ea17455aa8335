#!/usr/bin/env bash
# Every generated pain.001 file validates against the official ISO 20022
# schema (pain.001.001.03.xsd) with xmllint: a multi-payee EUR batch and a
# single-payee USD batch.  The files written out hash to the SHA-256 recorded
# in the batch, regenerate byte for byte, and a deliberately broken copy of
# each is rejected by xmllint (so this test can fail).
set -euo pipefail
cd "$(dirname "$0")/../.."
xsd=test/fixtures/iso20022/pain.001.001.03.xsd	# the official schema, carried in the project (README there)
[ -f "$xsd" ] || { echo "FAIL: $xsd missing"; exit 1; }
command -v xmllint >/dev/null || { echo "FAIL: xmllint missing (Debian libxml2-utils)"; exit 1; }
echo "schema: $xsd"

db=payout_pain001
dropdb --if-exists "$db" >/dev/null 2>&1
createdb "$db"
tmp=$(mktemp -d)
trap 'dropdb --if-exists "$db" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
psql() { command psql -X -q -v ON_ERROR_STOP=1 -d "$db" "$@"; }
psql -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION settle CASCADE'
psql --single-transaction -f test/process/payout_scenario.sql >/dev/null
psql --single-transaction >/dev/null <<'SQL'
SET LOCAL settle.reason = 'payout_pain001 test';
SELECT settle.set_payout_setting('Operator Cloud Pte. Ltd. & Co <Asia>', 'DE89370400440532013000', 'COBADEFFXXX', 'DE');
SELECT settle.set_payee('alpha', 'Alpha Cloud GmbH', 'GB82WEST12345698765432', 'NWBKGB2L', 'GB', 'EUR');
SELECT settle.set_payee('bravo', 'Bravo & <Sons> "IT"', 'FR1420041010050500013M02606', 'BNPAFRPP', 'FR', 'EUR');
SELECT settle.set_payee('echo', 'Écho Ltd ''quoted''', 'NL91ABNA0417164300', 'ABNANL2A', 'NL', 'EUR');
SELECT settle.set_payee('delta', 'Delta Inc', 'CH9300762011623852957', 'UBSWCHZH80A', 'CH', 'USD');
SELECT settle.create_payout_batch('2026-10', 'EUR');
SELECT settle.create_payout_batch('2026-10', 'USD');
SQL

# The exact bytes of a file (base64 through psql keeps trailing newlines).
file() { psql -At -c "SELECT encode(convert_to(settle.payout_file($1, '$2'), 'UTF8'), 'base64')" | base64 -d; }

fail=0
batches=$(psql -At -c "SELECT batch_id FROM settle.payout_batch ORDER BY batch_id")
[ "$(echo "$batches" | wc -l)" = 2 ] || { echo "FAIL: expected 2 batches, got: $batches"; exit 1; }
for b in $batches; do
	n=$(psql -At -c "SELECT payouts FROM settle.payout_batch WHERE batch_id = $b")
	file "$b" pain.001 > "$tmp/batch$b.xml"
	file "$b" csv > "$tmp/batch$b.csv"
	echo "batch $b: $n payout(s), $(wc -c < "$tmp/batch$b.xml") bytes of pain.001"
	if xmllint --noout --schema "$xsd" "$tmp/batch$b.xml"; then
		echo "ok: batch $b validates against pain.001.001.03.xsd"
	else
		echo "FAIL: batch $b does not validate"; fail=1
	fi
	tx=$(xmllint --xpath 'count(//*[local-name()="CdtTrfTxInf"])' "$tmp/batch$b.xml")
	[ "$tx" = "$n" ] && echo "ok: $tx CdtTrfTxInf" || { echo "FAIL: $tx CdtTrfTxInf, $n payouts"; fail=1; }
	# every registered format's file: its bytes hash to what the batch recorded
	nf=0
	for fmt in $(psql -At -c "SELECT format FROM settle.payout_format ORDER BY format"); do
		nf=$((nf + 1))
		file "$b" "$fmt" > "$tmp/batch$b.$fmt"
		want=$(psql -At -c "SELECT encode(sha256, 'hex') || ' ' || size_bytes FROM settle.payout_batch_file
		                     WHERE batch_id = $b AND format = '$fmt'")
		have="$(sha256sum < "$tmp/batch$b.$fmt" | cut -d' ' -f1) $(wc -c < "$tmp/batch$b.$fmt")"
		[ "$want" = "$have" ] && echo "ok: batch $b $fmt sha256 and size $have as recorded" \
			|| { echo "FAIL: batch $b $fmt sha256 and size $have, recorded '$want'"; fail=1; }
	done
	cmp -s "$tmp/batch$b.xml" "$tmp/batch$b.pain.001" && [ -s "$tmp/batch$b.csv" ] && [ "$nf" -ge 2 ] \
		&& echo "ok: batch $b: $nf registered formats, pain.001 and csv among them" || { echo "FAIL: batch $b formats ($nf)"; fail=1; }
	# regenerate: identical bytes
	file "$b" pain.001 > "$tmp/again$b.xml"
	cmp -s "$tmp/batch$b.xml" "$tmp/again$b.xml" && echo "ok: batch $b regenerates byte for byte" \
		|| { echo "FAIL: batch $b regenerated differently"; fail=1; }
	# negative checks: xmllint must reject broken copies
	sed 's#<CtrlSum>[^<]*</CtrlSum>#<CtrlSum>not-a-number</CtrlSum>#' "$tmp/batch$b.xml" > "$tmp/broken$b-1.xml"
	sed '0,/<BIC>[^<]*<\/BIC>/s##<BIC>BAD</BIC>#' "$tmp/batch$b.xml" > "$tmp/broken$b-2.xml"
	sed 's#<EndToEndId>[^<]*</EndToEndId>##' "$tmp/batch$b.xml" > "$tmp/broken$b-3.xml"
	for k in 1 2 3; do
		if cmp -s "$tmp/batch$b.xml" "$tmp/broken$b-$k.xml"; then
			echo "FAIL: broken copy $k of batch $b is not broken"; fail=1
		elif xmllint --noout --schema "$xsd" "$tmp/broken$b-$k.xml" 2>/dev/null; then
			echo "FAIL: xmllint accepted broken copy $k of batch $b"; fail=1
		else
			echo "ok: xmllint rejects broken copy $k of batch $b"
		fi
	done
done
# the multi-payee batch really holds three payees with distinct IBANs
ibans=$(grep -o '<IBAN>[^<]*</IBAN>' "$tmp/batch1.xml" | sort -u | wc -l)
[ "$ibans" = 4 ] && echo "ok: batch 1 names the debtor and three creditor IBANs" || { echo "FAIL: $ibans distinct IBANs in batch 1"; fail=1; }
# names with markup characters are escaped: parsed back they are the names recorded
nm() { xmllint --xpath "string($1)" "$tmp/batch1.xml"; }
[ "$(nm '//*[local-name()="CdtTrfTxInf"][2]/*[local-name()="Cdtr"]/*[local-name()="Nm"]')" = 'Bravo & <Sons> "IT"' ] \
	&& [ "$(nm '//*[local-name()="InitgPty"]/*[local-name()="Nm"]')" = 'Operator Cloud Pte. Ltd. & Co <Asia>' ] \
	&& [ "$(nm '//*[local-name()="CdtTrfTxInf"][3]/*[local-name()="Cdtr"]/*[local-name()="Nm"]')" = "Écho Ltd 'quoted'" ] \
	&& grep -q 'Bravo &amp; &lt;Sons&gt;' "$tmp/batch1.xml" && echo "ok: names are escaped and parse back unchanged" \
	|| { echo "FAIL: a name does not parse back unchanged"; fail=1; }
[ "$fail" = 0 ] && echo "payout_pain001: all checks passed"
exit $fail
