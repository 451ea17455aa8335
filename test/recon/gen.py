#!/usr/bin/env python3
"""Seeded reconciliation scenarios with known truth.

Writes, for one seed, the SQL that builds a provider's view and settle's bill
lines of two billing cycles, and the truth: for every provider scope whose
delta is not zero, each row settle.reconcile must name (cause, line or
provider record, amount, old and new amount).  Decimal arithmetic only.

  2026-10  the provider's total (a QueryBillOverview snapshot taken
           2026-11-02) and its item listing (settle.import_provider_items):
           late revisions, withdrawn lines (unlisted but still counted, or
           withdrawn while still listed), missing pages of provider items,
           duplicated items, CNY lines in USD scopes converted at a rate
           that was corrected (two versions), and the total rounded to the
           currency's minor unit (JPY 0, USD 2, KWD 3).
  2026-09  the total only (taken 2026-10-02), no listing: revisions and new
           lines after it was taken, withdrawals after it (and before it:
           nothing to explain), duplicates, one converted line per FX
           scope (it carries the unnamed difference), rounding.

One scope of 2026-10 holds --big provider items, each with a late revision
or missing (explain_delta at >= 1,000 rows).

  python3 test/recon/gen.py --seed 7 --out /tmp/dir [--scopes 24] [--big 1200]
  -> /tmp/dir/setup.sql, /tmp/dir/truth.csv (period,scope_key,cause,key,amount,old_amount,new_amount)
"""
import argparse
import csv
import os
import random
from decimal import Decimal, ROUND_HALF_EVEN, ROUND_HALF_UP

EXP = {'USD': 2, 'JPY': 0, 'KWD': 3}
RATE_V1 = Decimal('0.1400')        # CNY/USD recorded first ...
RATE_V2 = Decimal('0.1385')        # ... then corrected: version 2 is in force
PROVIDER_RATE = Decimal('0.1392')  # the rate the provider used
BEFORE = {'2026-10': '2026-11-01 00:00+00', '2026-09': '2026-10-01 00:00+00'}
TAKEN = {'2026-10': '2026-11-02 00:00+00', '2026-09': '2026-10-02 00:00+00'}
AFTER = {'2026-10': '2026-11-03 00:00+00', '2026-09': '2026-10-03 00:00+00'}
DAYS = {'2026-10': 31, '2026-09': 30}


def q(s):
    return "'" + str(s).replace("'", "''") + "'"


def convert(cny):
    """settle converts at the rate in force (version 2), held to 8 decimals, half away from zero."""
    return (cny * RATE_V2).quantize(Decimal('1e-8'), rounding=ROUND_HALF_UP)


def rnd(x, cur):
    return x.quantize(Decimal(1).scaleb(-EXP[cur]), rounding=ROUND_HALF_EVEN)


def amount(rng, cur):
    """An amount with 1 to 4 more decimals than the currency has; a few credits."""
    scale = EXP[cur] + rng.randint(1, 4)
    x = Decimal(rng.randint(1, 500_000)).scaleb(-2) + Decimal(rng.randint(0, 10 ** scale - 1)).scaleb(-scale)
    return x if rng.random() > 0.05 else -x


class Gen:
    def __init__(self, seed, n_scopes, big):
        self.rng = random.Random(seed)
        self.n_scopes = n_scopes
        self.big = big
        self.lines = []      # (period, line_key, revision, record, account, product, currency, amount, ingested, withdrawal, day)
        self.totals = []     # (period, account, product, currency, total)
        self.items = []      # (period, account, product, currency, record, amount)   2026-10 only
        self.truth = []      # (period, scope_key, cause, key, amount, old, new)

    def line(self, period, key, rev, rec, acct, prod, cur, amt, ingested, withdrawal, day):
        self.lines.append((period, key, rev, rec, acct, prod, cur, amt, ingested, withdrawal, day))

    def scope_key(self, period, acct, prod, cur):
        return 'provider:%s/%s/%s/%s@connector:gen' % (period, acct, prod, cur)

    # ------------------------------------------------------------ 2026-10
    def listed_scope(self, i, cur, n, big=False):
        rng, period = self.rng, '2026-10'
        acct, prod = 'acct-%02d' % i, rng.choice(['ecs', 'oss', 'rds'])
        sk = self.scope_key(period, acct, prod, cur)
        rows, ours, provider = [], Decimal(0), Decimal(0)
        fx_scope = cur == 'USD' and not big and rng.random() < 0.5
        missing_page = set()
        if not big and rng.random() < 0.6:       # a page of 5 to 12 items never stored
            start = rng.randint(0, max(0, n - 13))
            missing_page = set(range(start, start + rng.randint(5, 12)))
        day = 0
        for k in range(n):
            rec = 'R%02d-%05d' % (i, k)
            key = 'gen/%s/%s/%05d' % (acct, prod, k)
            a = amount(rng, cur)
            d = 1 + day % DAYS[period]
            if big:
                kind = 'late' if k % 3 else 'missing'
            elif k in missing_page:
                kind = 'missing'
            else:
                kind = rng.choices(['clean', 'late', 'unlisted', 'withdrawn_listed', 'withdrawn_gone', 'dup', 'fx'],
                                   [50, 10, 4, 4, 3, 4, 6 if fx_scope else 0])[0]
            if kind == 'missing':
                self.items.append((period, acct, prod, cur, rec, a))
                provider += a
                rows.append((sk, 'missing', 'record:' + rec, -a, a, None))
                continue
            day += 1
            if kind == 'clean':
                self.line(period, key, 1, rec, acct, prod, cur, a, BEFORE[period], None, d)
                self.items.append((period, acct, prod, cur, rec, a)); provider += a; ours += a
            elif kind == 'late':
                new = a + amount(rng, cur) / 10
                new = new if new != a else a + 1
                self.line(period, key, 1, rec, acct, prod, cur, a, BEFORE[period], None, d)
                self.line(period, key, 2, rec, acct, prod, cur, new, AFTER[period], None, d)
                self.items.append((period, acct, prod, cur, rec, a)); provider += a; ours += new
                rows.append((sk, 'late_revision', key, new - a, a, new))
            elif kind == 'unlisted':            # the provider no longer lists it; we still count it
                self.line(period, key, 1, rec, acct, prod, cur, a, BEFORE[period], None, d)
                ours += a
                rows.append((sk, 'withdrawn', key, a, None, a))
            elif kind == 'withdrawn_listed':    # withdrawn here, the provider still lists it
                self.line(period, key, 1, rec, acct, prod, cur, a, BEFORE[period], None, d)
                self.line(period, key, 2, rec, acct, prod, cur, Decimal(0), AFTER[period], 'not returned by a complete re-pull', d)
                self.items.append((period, acct, prod, cur, rec, a)); provider += a
                rows.append((sk, 'withdrawn', key, -a, a, Decimal(0)))
            elif kind == 'withdrawn_gone':      # withdrawn and no longer listed: nothing to explain
                self.line(period, key, 1, rec, acct, prod, cur, a, BEFORE[period], None, d)
                self.line(period, key, 2, rec, acct, prod, cur, Decimal(0), AFTER[period], 'not returned by a complete re-pull', d)
            elif kind == 'dup':                 # the same item stored under a second key
                self.line(period, key, 1, rec, acct, prod, cur, a, BEFORE[period], None, d)
                self.line(period, key + '~dup', 1, rec, acct, prod, cur, a, BEFORE[period], None, d)
                self.items.append((period, acct, prod, cur, rec, a)); provider += a; ours += a + a
                rows.append((sk, 'duplicate', key + '~dup', a, None, a))
            elif kind == 'fx':                  # billed in CNY; the provider counts USD at its own rate
                cny = abs(a) * 7
                theirs = rnd(cny * PROVIDER_RATE, 'USD')
                mine = convert(cny)
                self.line(period, key, 1, rec, acct, prod, 'CNY', cny, BEFORE[period], None, d)
                self.items.append((period, acct, prod, cur, rec, theirs)); provider += theirs; ours += mine
                if mine != theirs:
                    rows.append((sk, 'fx', key, mine - theirs, theirs, mine))
        total = rnd(provider, cur)
        self.totals.append((period, acct, prod, cur, total))
        if provider != total:
            rows.append((sk, 'rounding', '', provider - total, None, None))
        assert sum(r[3] for r in rows) == ours - total
        if ours != total:
            self.truth += [(period,) + r for r in rows]

    # ------------------------------------------------------------ 2026-09
    def plain_scope(self, i, cur, n):
        rng, period = self.rng, '2026-09'
        acct, prod = 'acct-%02d' % i, rng.choice(['ecs', 'oss', 'rds'])
        sk = self.scope_key(period, acct, prod, cur)
        rows, ours, provider = [], Decimal(0), Decimal(0)
        fx_line = cur == 'USD' and rng.random() < 0.4
        fx_extra = Decimal(0)
        for k in range(n):
            rec = 'S%02d-%05d' % (i, k)
            key = 'gen/sep/%s/%s/%05d' % (acct, prod, k)
            a = amount(rng, cur)
            d = 1 + k % DAYS[period]
            kind = rng.choices(['clean', 'late', 'new', 'withdrawn_after', 'withdrawn_before', 'dup'],
                               [60, 10, 5, 4, 3, 4])[0]
            if kind == 'clean':
                self.line(period, key, 1, rec, acct, prod, cur, a, BEFORE[period], None, d)
                provider += a; ours += a
            elif kind == 'late':
                new = a + amount(rng, cur) / 10
                new = new if new != a else a + 1
                self.line(period, key, 1, rec, acct, prod, cur, a, BEFORE[period], None, d)
                self.line(period, key, 2, rec, acct, prod, cur, new, AFTER[period], None, d)
                provider += a; ours += new
                rows.append((sk, 'late_revision', key, new - a, a, new))
            elif kind == 'new':                 # first seen after the total was taken
                self.line(period, key, 1, rec, acct, prod, cur, a, AFTER[period], None, d)
                ours += a
                rows.append((sk, 'late_revision', key, a, None, a))
            elif kind == 'withdrawn_after':
                self.line(period, key, 1, rec, acct, prod, cur, a, BEFORE[period], None, d)
                self.line(period, key, 2, rec, acct, prod, cur, Decimal(0), AFTER[period], 'not returned by a complete re-pull', d)
                provider += a
                rows.append((sk, 'withdrawn', key, -a, a, Decimal(0)))
            elif kind == 'withdrawn_before':
                self.line(period, key, 1, rec, acct, prod, cur, a, BEFORE[period], None, d)
                self.line(period, key, 2, rec, acct, prod, cur, Decimal(0), BEFORE[period].replace('00:00', '06:00'),
                          'not returned by a complete re-pull', d)
            elif kind == 'dup':
                self.line(period, key, 1, rec, acct, prod, cur, a, BEFORE[period], None, d)
                self.line(period, key + '~dup', 1, rec, acct, prod, cur, a, BEFORE[period], None, d)
                provider += a; ours += a + a
                rows.append((sk, 'duplicate', key + '~dup', a, None, a))
        if fx_line:
            key = 'gen/sep/%s/%s/cny' % (acct, prod)
            cny = Decimal('1234.5678')
            theirs = rnd(cny * PROVIDER_RATE, 'USD')
            mine = convert(cny)
            self.line(period, key, 1, 'S%02d-cny' % i, acct, prod, 'CNY', cny, BEFORE[period], None, 1)
            provider += theirs; ours += mine
            fx_extra = mine - theirs
        total = rnd(provider, cur)
        self.totals.append((period, acct, prod, cur, total))
        if fx_line:     # no listing: the converted line carries what the others leave, rounding included
            rows.append((sk, 'fx', key, fx_extra + provider - total, None, mine))
        elif provider != total:
            rows.append((sk, 'rounding', '', provider - total, None, None))
        assert sum(r[3] for r in rows) == ours - total
        if ours != total:
            self.truth += [(period,) + r for r in rows]

    def build(self):
        curs = ['USD', 'JPY', 'KWD']
        for i in range(self.n_scopes):
            self.listed_scope(i, curs[i % 3], self.rng.randint(20, 80))
        self.listed_scope(self.n_scopes, 'USD', self.big, big=True)
        for i in range(self.n_scopes):
            self.plain_scope(100 + i, curs[i % 3], self.rng.randint(20, 60))

    def sql(self):
        out = ["SET client_min_messages = warning;",
               "SET settle.reason = 'reconciliation scenario';",
               "SELECT settle.add_fx_rate('CNY', 'USD', '2026-10-31', %s, 'ECB');" % RATE_V1,
               "SELECT settle.add_fx_rate('CNY', 'USD', '2026-10-31', %s, 'ECB');" % RATE_V2,
               "SELECT settle.add_fx_rate('CNY', 'USD', '2026-09-30', %s, 'ECB');" % RATE_V1,
               "SELECT settle.add_fx_rate('CNY', 'USD', '2026-09-30', %s, 'ECB');" % RATE_V2,
               "INSERT INTO settle.connector (name, kind, endpoint) VALUES ('gen', 'alibaba_bss', 'https://business.ap-southeast-1.aliyuncs.com/');"]
        for period in ('2026-09', '2026-10'):
            out.append("INSERT INTO settle.raw_page (connector_id, request, http_status, body, body_sha256, requested_at, received_at) "
                       "SELECT connector_id, '{\"Action\": \"QueryBillOverview\", \"BillingCycle\": \"%s\"}', 200, '\\x7b7d', sha256('\\x7b7d'), %s, %s "
                       "FROM settle.connector WHERE name = 'gen';" % (period, q(TAKEN[period]), q(TAKEN[period])))
        for n, (period, acct, prod, cur, total) in enumerate(self.totals):
            out.append("INSERT INTO settle.provider_total (connector_id, billing_cycle, raw_page_id, item_no, billing_account_id, "
                       "product_code, subscription_type, currency, pretax_amount) SELECT c.connector_id, %s, "
                       "(SELECT max(p.raw_page_id) FROM settle.raw_page p WHERE p.request->>'BillingCycle' = %s), %d, %s, %s, "
                       "'PayAsYouGo', %s, %s FROM settle.connector c WHERE c.name = 'gen';"
                       % (q(period), q(period), n, q(acct), q(prod), q(cur), total))
        for b in range(0, len(self.lines), 500):
            vals = []
            for (period, key, rev, rec, acct, prod, cur, amt, ing, wd, d) in self.lines[b:b + 500]:
                day = '%s-%02d' % (period, d)
                vals.append("(%s, %d, %s, %s, %s, %s, %s, %s, %s, %s, %s)" % (
                    q(key), rev, q(rec), q(acct), q(period + '-01'), q(day), q(prod), q(cur), amt, q(ing),
                    'NULL' if wd is None else q(wd)))
            out.append("INSERT INTO settle.bill_line (reseller_id, line_key, revision, content_hash, source_item, "
                       "source_record_id, billing_account_id, billing_period_start, charge_period_start, charge_period_end, "
                       "charge_category, product_code, billing_currency, list_cost, billed_cost, ingested_at, withdrawal_reason) "
                       "SELECT 0, k, r, sha256(convert_to(k || '#' || r, 'UTF8')), 'PayAsYouGoBill', rec, acct, ps::date, "
                       "cs::timestamptz, cs::timestamptz + interval '1 day', 'Usage', prod, cur, amt, amt, ing::timestamptz, wd "
                       "FROM (VALUES %s) v(k, r, rec, acct, ps, cs, prod, cur, amt, ing, wd);" % ',\n'.join(vals))
        csvtext = ['billing_cycle,billing_account_id,product_code,currency,record_id,item,amount']
        for (period, acct, prod, cur, rec, a) in self.items:
            csvtext.append('%s,%s,%s,%s,%s,PayAsYouGoBill,%s' % (period, acct, prod, cur, rec, a))
        out.append("SELECT settle.import_provider_items('connector:gen', %s) > 0 AS listed;" % q('\n'.join(csvtext) + '\n'))
        return '\n'.join(out) + '\n'


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--seed', type=int, required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--scopes', type=int, default=24)
    ap.add_argument('--big', type=int, default=1200)
    a = ap.parse_args()
    g = Gen(a.seed, a.scopes, a.big)
    g.build()
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, 'setup.sql'), 'w') as f:
        f.write(g.sql())
    with open(os.path.join(a.out, 'truth.csv'), 'w', newline='') as f:
        w = csv.writer(f)
        for (period, sk, cause, key, amt, old, new) in g.truth:
            w.writerow([period, sk, cause, key, amt, '' if old is None else old, '' if new is None else new])
    print('%d lines, %d scopes, %d provider items, %d truth rows' % (len(g.lines), len(g.totals), len(g.items), len(g.truth)))


if __name__ == '__main__':
    main()
