#!/usr/bin/env python3
"""Seeded random-month generator for the differential test.

    python3 gen.py --seed N --lines M [--decimals D] [--out DIR] [--no FEATURE ...]

Writes DIR/load.sql (loads the scenario through settle's public API, bill
lines by a superuser INSERT into settle.bill_line, the way ingestion stores
them) and DIR/scenario.json (the same scenario for model.py).  The same seed
and options always give the same files.

Features (each on by default; --no NAME turns one off): tags, tiers, caps,
floors, refunds, deferred, versions, fx, proration, minpayout, revisions,
credits, invoice, quoted, zero, boundary, exponents, fixed, corrections
(phase 2: lock, late revisions, adjustments), blocking (a line without a
customer, an unlinked refund, a missing FX rate), precision (refunds and late
revisions of a third of their original, carried to --decimals: a reversal or
correction whose basis x rate has more than 16 decimals although its
original's had not, docs/rules.md section 8).
"""
import argparse
import datetime as dt
import hashlib
import json
import os
import random
from decimal import Decimal, Context, ROUND_HALF_EVEN

D = Decimal
CTX = Context(prec=200)

FEATURES = ['tags', 'tiers', 'caps', 'floors', 'refunds', 'deferred', 'versions', 'fx', 'proration',
            'minpayout', 'revisions', 'credits', 'invoice', 'quoted', 'zero', 'boundary', 'exponents', 'fixed',
            'corrections', 'blocking', 'precision']

CURRENCIES = {'USD': 2, 'CNY': 2, 'EUR': 2, 'GBP': 2, 'HKD': 2, 'SGD': 2, 'AUD': 2, 'MYR': 2, 'IDR': 2,
              'THB': 2, 'INR': 2, 'AED': 2, 'SAR': 2, 'PHP': 2, 'CHF': 2, 'JPY': 0, 'KRW': 0, 'VND': 0,
              'KWD': 3, 'BHD': 3, 'OMR': 3}
PRODUCTS = {'ecs': 'compute', 'ack': 'compute', 'fc': 'compute', 'oss': 'storage', 'nas': 'storage',
            'slb': 'networking', 'eip': 'networking', 'cdn': 'networking', 'rds': 'database',
            'polardb': 'database', 'redisa': 'database', 'waf': 'security', 'ddos': 'security', 'sls': 'other'}
MONTHLY = {'lic.office': 'other', 'lic.db': 'database'}   # added with add_product; whole-day charge periods
SKUS = {'ecs': ['ecs.g7.large', 'ecs.g7.xlarge', 'ecs.c6.large'], 'oss': ['oss.standard', 'oss.ia'],
        'rds': ['rds.mysql.s2', 'rds.pg.x4'], 'lic.office': ['lic.office.e3', 'lic.office.e5'],
        'lic.db': ['lic.db.std']}
REGIONS = ['cn-hangzhou', 'ap-southeast-1', 'us-west-1', 'eu-central-1']
SEGMENTS = ['standard', 'enterprise', 'smb', 'public sector']
CUST_TAGS = {'tier': ['gold', 'silver'], 'team': ['team a', 'team-b']}
LINE_TAGS = {'env': ['prod', 'staging', 'dev'], 'app': ['web', 'batch', 'ml pipeline']}
CHARGES = [('Usage', 70), ('Purchase', 18), ('Tax', 5), ('Adjustment', 4), ('Credit', 3)]
# rough value of one unit in USD, for plausible FX rates
USD_VALUE = {'USD': D(1), 'EUR': D('1.08'), 'CNY': D('0.138'), 'JPY': D('0.0067'), 'KWD': D('3.25'),
             'KRW': D('0.00075'), 'BHD': D('2.65')}
CATEGORIES = ['compute', 'storage', 'networking', 'database', 'security', 'other']


def fmt(d):
    s = format(d, 'f')
    if '.' in s:
        s = s.rstrip('0').rstrip('.')
    return s if s not in ('-0', '') else '0'


def bare(v):
    ok = all(ch.isalnum() or ch in '_.:/-+%' for ch in v)
    kw = v.lower() in ('and', 'pay', 'with', 'when', 'otherwise', 'per', 'line', 'cap', 'floor')
    if ok and v and not kw:
        return v
    return '"' + v.replace('\\', '\\\\').replace('"', '\\"') + '"'


def sql_str(s):
    return "'" + s.replace("'", "''") + "'"


class Gen:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        self.on = {f: f not in (a.no or []) for f in FEATURES}
        self.next_cust = 1
        self.next_fx = 1
        self.next_ag = 1
        self.key_n = 0

    def chance(self, p, feature=None):
        if feature and not self.on[feature]:
            return False
        return self.rng.random() < p

    def amount(self, scale=1):
        r = self.rng
        if self.on['zero'] and r.random() < 0.04:
            return D(0)
        maxd = self.a.decimals
        dec = r.choice([maxd, maxd, maxd, r.randint(0, maxd), 2, 0])
        cls = r.random()
        if cls < 0.1:
            hi = 1
        elif cls < 0.5:
            hi = 50
        elif cls < 0.85:
            hi = 800
        elif cls < 0.98:
            hi = 8000
        else:
            hi = 120000
        hi = int(hi * scale) or 1
        return D(r.randint(0, hi * 10 ** dec)).scaleb(-dec, CTX)

    def rate_pct(self, hi=30):
        r = self.rng
        dec = r.choice([0, 0, 1, 2, 3, 6])
        return D(r.randint(0, hi * 10 ** dec)).scaleb(-dec, CTX)

    def limit_amount(self, lo, hi, maxdec=None):
        r = self.rng
        dec = r.choice([0, 0, 1, 2, 3, 8]) if maxdec is None else maxdec
        return self.dec_between(lo, hi, dec)

    def dec_between(self, lo, hi, dec):
        """A random decimal in [lo, hi] with dec decimals (integers only, no float)."""
        k = 10 ** dec
        return D(self.rng.randint(int(D(lo) * k), int(D(hi) * k))).scaleb(-dec, CTX)

    # ------------------------------------------------------------ scenario
    def build(self):
        r = self.rng
        y = r.choice([2025, 2026, 2027])
        m = r.randint(1, 12)
        self.periods = []
        for i in range(self.a.periods):
            mm = (m - 1 + i) % 12 + 1
            yy = y + (m - 1 + i) // 12
            self.periods.append('%04d-%02d' % (yy, mm))
        nres = self.a.resellers or r.randint(1, 3)
        ccys = ['USD', 'EUR', 'CNY']
        if self.on['exponents']:
            ccys += ['JPY', 'KWD', 'KRW', 'BHD']
        self.resellers = []
        for i in range(nres):
            rid = i + 1
            ccy = ccys[i % len(ccys)] if i < 3 and self.on['exponents'] and nres > 1 else r.choice(ccys)
            if self.on['exponents'] and i == 0 and nres == 1:
                ccy = r.choice(['USD', 'JPY', 'KWD'])
            self.resellers.append(self.build_reseller(rid, ccy))
        self.build_lines()
        self.build_blocking()
        self.build_phase2()
        for rs in self.resellers:
            self.build_rules(rs)
        self.build_fx()

    def build_reseller(self, rid, ccy):
        r = self.rng
        ncust = r.randint(1, self.a.customers)
        custs = []
        for j in range(ncust):
            c = {'id': self.next_cust, 'code': 'c%d' % self.next_cust, 'segment': r.choice(SEGMENTS),
                 'tags': {}, 'account': 'acct-%d-%d' % (rid, self.next_cust)}
            self.next_cust += 1
            if self.on['tags']:
                for k, vals in CUST_TAGS.items():
                    if r.random() < 0.5:
                        c['tags'][k] = r.choice(vals if self.on['quoted'] else [v for v in vals if ' ' not in v])
            if not self.on['quoted'] and ' ' in c['segment']:
                c['segment'] = 'standard'
            custs.append(c)
        first = dt.date.fromisoformat(self.periods[0] + '-01')
        ag = {'id': self.next_ag, 'currency': ccy,
              'rounding': r.choice(['half_even', 'half_up', 'down']),
              'date_basis': 'invoice_period' if self.chance(0.2, 'invoice') else 'service_month',
              'refund_window_days': r.choice([0, 15, 30, 45, 90]),
              'minimum_payout': fmt(r.choice([D(0), D(50), D('12.5'), D(1000), D(100000)]) if self.on['minpayout'] else D(0)),
              'effective_from': first.isoformat(), 'effective_to': None}
        self.next_ag += 1
        return {'id': rid, 'code': 'r%d' % rid, 'customers': custs, 'agreements': [ag], 'rule_versions': []}

    def new_key(self, acct, start, sku, cat, suffix=''):
        self.key_n += 1
        res = 'i-%06x' % self.rng.randrange(16 ** 6)
        return 'focus:%s/%s/%s/%s/%s%s#%d' % (acct, start[:19], res, sku or '-', cat, suffix, self.key_n)

    def build_lines(self):
        r = self.rng
        self.lines = []
        per_period = max(1, self.a.lines // len(self.periods))
        all_products = list(PRODUCTS) + (list(MONTHLY) if self.on['proration'] else [])
        for p in self.periods:
            y, m = int(p[:4]), int(p[5:])
            first = dt.datetime(y, m, 1, tzinfo=dt.timezone.utc)
            nxt = dt.datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=dt.timezone.utc)
            dim = (nxt - first).days
            for _ in range(per_period):
                rs = r.choice(self.resellers)
                ag = rs['agreements'][0]
                cust = r.choice(rs['customers'])
                prod = r.choice(all_products)
                sku = r.choice(SKUS.get(prod, [None, prod + '.std']))
                if prod in MONTHLY:
                    d0 = r.randint(1, dim)
                    d1 = dim + 1 if r.random() < 0.4 else r.randint(d0 + 1, dim + 1)
                    start = first + dt.timedelta(days=d0 - 1)
                    end = first + dt.timedelta(days=d1 - 1)
                else:
                    if self.on['boundary'] and r.random() < 0.06:
                        start = r.choice([first, nxt - dt.timedelta(minutes=30), nxt - dt.timedelta(hours=1)])
                    else:
                        start = first + dt.timedelta(minutes=r.randrange(dim * 24 * 60))
                    end = start + r.choice([dt.timedelta(hours=1), dt.timedelta(days=1)])
                cc = r.choices([c for c, _ in CHARGES], [w for _, w in CHARGES])[0]
                if cc == 'Credit' and not self.on['credits']:
                    cc = 'Usage'
                bill_ccy = ag['currency']
                if self.on['fx'] and r.random() < 0.15:
                    bill_ccy = r.choice([c for c in ('USD', 'CNY', 'EUR', 'JPY', 'KWD') if c != ag['currency']])
                billed = self.amount()
                if bill_ccy in ('JPY', 'KRW'):
                    billed = (billed * 150).quantize(D(1).scaleb(-min(self.a.decimals, 4)), context=CTX)
                disc = self.amount(0.1) if r.random() < 0.5 else D(0)
                coupon = min(self.amount(0.05), billed) if r.random() < 0.2 else D(0)
                listc = billed + disc
                paid = billed - coupon
                if cc == 'Credit':
                    billed, listc, paid = -billed, -listc, -paid
                bps = dt.date(y, m, 1)
                if ag['date_basis'] == 'invoice_period' and r.random() < 0.15:
                    # late usage of the previous month invoiced in this one
                    start = start - dt.timedelta(days=dim)
                    end = start + dt.timedelta(hours=1)
                tags = {}
                if self.on['tags']:
                    for k, vals in LINE_TAGS.items():
                        if r.random() < 0.5:
                            tags[k] = r.choice(vals if self.on['quoted'] else [v for v in vals if ' ' not in v])
                region = r.choice(REGIONS + [None])
                ln = {'reseller_id': rs['id'], 'customer_id': cust['id'], 'account': cust['account'],
                      'revision': 1, 'billing_period_start': bps.isoformat(),
                      'charge_period_start': start.isoformat().replace('+00:00', 'Z'),
                      'charge_period_end': end.isoformat().replace('+00:00', 'Z'),
                      'charge_category': cc, 'product_code': prod, 'sku_id': sku, 'region_id': region,
                      'billing_currency': bill_ccy, 'list_cost': fmt(listc), 'billed_cost': fmt(billed),
                      'amount_paid': fmt(paid), 'original_line_key': None, 'tags': tags}
                ln['line_key'] = self.new_key(cust['account'], ln['charge_period_start'], sku, cc)
                self.lines.append(ln)
        # refunds
        if self.on['refunds']:
            charges = [l for l in self.lines if D(l['billed_cost']) > 0 and l['charge_category'] in ('Usage', 'Purchase')]
            r.shuffle(charges)
            # its own random stream, so that the rest of a seed's scenario stays as it was
            rp = random.Random(self.a.seed * 7919 + 2)
            for orig in charges[:max(1, len(charges) // 15)]:
                rs = self.resellers[orig['reseller_id'] - 1]
                w = rs['agreements'][0]['refund_window_days']
                ages = [0, r.randint(0, max(w, 1)), w]
                if self.on['deferred']:
                    ages += [w + 1, w + r.randint(1, 40)]
                age = r.choice(ages)
                o_start = dt.datetime.fromisoformat(orig['charge_period_start'].replace('Z', '+00:00'))
                start = dt.datetime.combine(o_start.date() + dt.timedelta(days=age), dt.time(r.randrange(24), r.randrange(60)),
                                            tzinfo=dt.timezone.utc)
                if start < o_start:
                    start = o_start
                p = '%04d-%02d' % (start.year, start.month)
                if p not in self.periods:
                    continue
                frac = r.choice([D(1), D('0.5'), D('0.1'), D('0.333')])
                if self.on['precision'] and rp.random() < 0.25:
                    frac = D(1) / 3
                ln = dict(orig)
                ln['tags'] = dict(orig['tags'])
                for f in ('list_cost', 'billed_cost', 'amount_paid'):
                    ln[f] = fmt(-(D(orig[f]) * frac).quantize(D(1).scaleb(-self.a.decimals), context=CTX))
                ln['charge_period_start'] = start.isoformat().replace('+00:00', 'Z')
                ln['charge_period_end'] = (start + dt.timedelta(hours=1)).isoformat().replace('+00:00', 'Z')
                # a refund is invoiced no earlier than its charge
                ln['billing_period_start'] = max('%s-01' % p, orig['billing_period_start'])
                ln['original_line_key'] = orig['line_key']
                ln['line_key'] = self.new_key(orig['account'], ln['charge_period_start'], orig['sku_id'],
                                              orig['charge_category'], '/refund')
                self.lines.append(ln)
        # revisions: a later revision replaces the line's amounts
        if self.on['revisions']:
            extra = []
            for ln in self.lines:
                if r.random() < 0.06:
                    for rev in range(2, r.choice([3, 3, 4])):
                        n = dict(ln)
                        n['revision'] = rev
                        k = r.choice([D('1.1'), D('0.9'), D(2), D(0)])
                        for f in ('list_cost', 'billed_cost', 'amount_paid'):
                            n[f] = fmt((D(ln[f]) * k).quantize(D(1).scaleb(-self.a.decimals), context=CTX))
                        extra.append(n)
            self.lines += extra

    def period_of_line(self, l):
        ag = self.resellers[l['reseller_id'] - 1]['agreements'][0]
        if ag['date_basis'] == 'invoice_period':
            return l['billing_period_start'][:7]
        return l['charge_period_start'][:7]

    def build_phase2(self):
        """After the first settlement: the first period is locked and late
        revisions arrive, for lines of the locked period (corrections) and of
        later periods (a new run supersedes the draft)."""
        r = self.rng
        self.phase2 = None
        if not self.on['corrections'] or len(self.periods) < 2:
            return
        latest = {}
        for l in self.lines:
            k = l['line_key']
            if k not in latest or l['revision'] > latest[k]['revision']:
                latest[k] = l
        new = []
        rp = random.Random(self.a.seed * 7919 + 3)
        for k in sorted(latest):
            l = latest[k]
            if l['original_line_key']:
                continue
            p = self.period_of_line(l)
            if r.random() < (0.08 if p == self.periods[0] else 0.03):
                n = dict(l)
                n['tags'] = dict(l['tags'])
                n['revision'] = l['revision'] + 1
                n['phase'] = 2
                f = r.choice([D('1.25'), D('0.5'), D(0), D('1.000001')])
                if self.on['precision'] and rp.random() < 0.25:
                    f = D(1) / 3
                for fld in ('list_cost', 'billed_cost', 'amount_paid'):
                    n[fld] = fmt((D(l[fld]) * f).quantize(D(1).scaleb(-self.a.decimals), context=CTX))
                new.append(n)
        self.lines += new
        # every period is settled again: a locked one returns its run unchanged
        self.phase2 = {'lock_periods': [self.periods[0]], 'settle_order': list(self.periods), 'adjustments': []}
        # approved adjustments (four eyes) into later periods' statements; their
        # own random stream, so that the rest of a seed's scenario stays as it was
        r = random.Random(self.a.seed * 7919 + 1)
        for i in range(r.choice([0, 1, 2])):
            rs = r.choice(self.resellers)
            minor = CURRENCIES[rs['agreements'][0]['currency']]
            amt = D(r.randint(-50 * 10 ** minor, 200 * 10 ** minor)).scaleb(-minor, CTX)
            self.phase2['adjustments'].append({'n': i + 1, 'reseller_id': rs['id'], 'reseller': rs['code'],
                                               'period': r.choice(self.periods[1:]), 'amount': fmt(amt)})

    def build_blocking(self):
        """Things settle must not guess (settlement.md): a line without a
        customer, a refund whose original does not exist, a missing FX rate (in
        build_fx), a gap between rule versions.  Never in the first period when
        it is to be locked."""
        r = self.rng
        self.skip_fx = set()
        if not self.on['blocking']:
            return
        later = [l for l in self.lines if self.period_of_line(l) != self.periods[0] and l['revision'] == 1
                 and not l['original_line_key'] and l.get('phase', 1) == 1]
        if later and r.random() < 0.3:
            l = r.choice(later)
            n = dict(l, tags=dict(l['tags']), customer_id=None, account='acct-unmapped-%d' % l['reseller_id'])
            n['line_key'] = self.new_key(n['account'], n['charge_period_start'], n['sku_id'], n['charge_category'])
            self.lines.append(n)
        if later and r.random() < 0.3:
            l = r.choice(later)
            n = dict(l, tags=dict(l['tags']))
            for fld in ('list_cost', 'billed_cost', 'amount_paid'):
                n[fld] = fmt(-abs(D(l[fld])))
            n['original_line_key'] = 'focus:nowhere/' + l['line_key']
            n['line_key'] = self.new_key(l['account'], l['charge_period_start'], l['sku_id'], l['charge_category'], '/refund')
            self.lines.append(n)
        if r.random() < 0.25 and len(self.periods) > 1:
            self.skip_fx.add(r.choice(self.periods[1:]))

    # ------------------------------------------------------------ rules
    def cust_of(self, cid):
        for rs in self.resellers:
            for c in rs['customers']:
                if c['id'] == cid:
                    return c

    def build_rules(self, rs):
        r = self.rng
        ag = rs['agreements'][0]
        first = dt.date.fromisoformat(ag['effective_from'])
        bounds = [first]
        if self.chance(0.6, 'versions') and len(self.periods) > 1:
            pi = r.randint(1, len(self.periods) - 1)
            y, m = int(self.periods[pi][:4]), int(self.periods[pi][5:])
            day = r.choice([1, r.randint(2, 28)])
            bounds.append(dt.date(y, m, day))
            if self.chance(0.3, 'versions'):
                later = bounds[-1] + dt.timedelta(days=r.randint(5, 40))
                if later.strftime('%Y-%m') in self.periods:
                    bounds.append(later)
        mylines = [l for l in self.lines if l['reseller_id'] == rs['id']]
        for i, b in enumerate(bounds):
            to = bounds[i + 1] if i + 1 < len(bounds) else None
            rule = self.make_rule(rs, ag, mylines)
            rs['rule_versions'].append({'agreement_id': ag['id'], 'version': i + 1, 'effective_from': b.isoformat(),
                                        'effective_to': to.isoformat() if to else None, 'rule': rule,
                                        'text': render_rule(rule)})

    def spend_scale(self, mylines, by_customer):
        sums = {}
        for l in mylines:
            if l['original_line_key'] or l['revision'] != 1:
                continue
            k = l['customer_id'] if by_customer else 0
            sums[k] = sums.get(k, D(0)) + abs(D(l['billed_cost']))
        vals = sorted(sums.values()) or [D(100)]
        return vals

    def cumulative_points(self, mylines, by_customer):
        """Exact running sums in line key order (for thresholds exactly at a line's start or end)."""
        pts = []
        run = {}
        for l in sorted(mylines, key=lambda l: l['line_key']):
            if l['original_line_key'] or l['revision'] != 1 or D(l['billed_cost']) <= 0:
                continue
            k = l['customer_id'] if by_customer else 0
            run[k] = run.get(k, D(0)) + D(l['billed_cost'])
            if run[k].as_tuple().exponent >= -8 and len(str(int(run[k]))) <= 14:
                pts.append(run[k])
        return pts

    def make_tiers(self, name, mylines):
        r = self.rng
        meas = r.choice(['customer_spend', 'customer_spend', 'reseller_spend', 'reseller_volume'])
        mode = 'all_units' if meas == 'reseller_volume' else r.choice(['all_units', 'graduated'])
        nb = r.randint(2, 4)
        if meas == 'reseller_volume':
            n = len(mylines) or 10
            th = sorted(set(r.randint(1, max(2, n)) for _ in range(nb - 1)))
        else:
            vals = self.spend_scale(mylines, meas == 'customer_spend')
            pts = self.cumulative_points(mylines, meas == 'customer_spend')
            th = set()
            for _ in range(nb - 1):
                if pts and r.random() < 0.4:
                    th.add(r.choice(pts))
                else:
                    v = r.choice(vals) * D(r.choice(['0.2', '0.5', '0.8', '1.1']))
                    th.add(v.quantize(D(1).scaleb(-r.choice([0, 2, 8])), context=CTX))
            th = sorted(t for t in th if t > 0)
        edges = [D(0)] + th
        bands = []
        for i, lo in enumerate(edges):
            hi = edges[i + 1] if i + 1 < len(edges) else None
            bands.append({'from': fmt(lo), 'to': fmt(hi) if hi is not None else None, 'rate': fmt(self.rate_pct(20))})
        shown = bands[:]
        r.shuffle(shown)     # bands may be written in any order
        return {'measure': meas, 'mode': mode, 'bands': bands, 'written': shown}

    def make_clause_conds(self, level, monthly_only):
        r = self.rng
        c = {}
        if level == 3:
            pool = [s for p in (MONTHLY if monthly_only else SKUS) for s in SKUS.get(p, [])]
            c['sku'] = sorted(set(r.sample(pool, r.choice([1, 1, 2]))))
            if r.random() < 0.2:
                c['product'] = sorted({p for p in SKUS if any(s in SKUS[p] for s in c['sku'])})
        elif level == 2:
            pool = list(MONTHLY) if monthly_only else list(PRODUCTS) + (list(MONTHLY) if self.on['proration'] else [])
            c['product'] = sorted(set(r.sample(pool, r.choice([1, 1, 2]))))
        elif level == 1:
            c['category'] = sorted(set(r.sample(CATEGORIES, r.choice([1, 1, 2]))))
        nq = r.choice([0, 0, 1, 1, 2]) if level else r.choice([1, 1, 2])
        dims = ['charge', 'region', 'segment'] + (['tag'] if self.on['tags'] else [])
        for d in r.sample(dims, min(nq, len(dims))):
            if d == 'charge':
                c['charge'] = sorted(set(r.sample(['usage', 'purchase', 'tax', 'adjustment', 'Usage', 'PURCHASE'], r.choice([1, 2]))),
                                     key=str.lower)
                # a dimension's values are case-insensitively distinct
                seen, vals = set(), []
                for v in c['charge']:
                    if v.lower() not in seen:
                        seen.add(v.lower())
                        vals.append(v)
                c['charge'] = vals
            elif d == 'region':
                c['region'] = sorted(set(r.sample(REGIONS, r.choice([1, 2]))))
            elif d == 'segment':
                segs = SEGMENTS if self.on['quoted'] else SEGMENTS[:3]
                c['segment'] = sorted(set(r.sample(segs, r.choice([1, 2]))))
            else:
                src = dict(LINE_TAGS)
                src.update(CUST_TAGS)
                k = r.choice(sorted(src))
                vals = src[k] if self.on['quoted'] else [v for v in src[k] if ' ' not in v]
                c['tags'] = {k: sorted(set(r.sample(vals, r.choice([1, 1, 2]))))}
        return c

    def make_rule(self, rs, ag, mylines):
        r = self.rng
        ccy = ag['currency']
        rule = {'currency': ccy, 'tiers': {}, 'clauses': []}
        if ag['rounding'] != 'half_even' or r.random() < 0.3:
            rule['rounding'] = ag['rounding']
        if r.random() < 0.3:
            rule['basis'] = r.choice(['billed_cost', 'list_cost', 'amount_paid'])
        scale = D(1) if CURRENCIES[ccy] else D(100)
        if r.random() < 0.5:
            cats = ['usage', 'purchase', 'tax', 'adjustment'] + (['credit'] if self.on['credits'] else [])
            rule['eligible'] = sorted(set(r.sample(cats, r.randint(1, 3))), key=cats.index)
        if r.random() < 0.3:
            rule['minimum_payout'] = ag['minimum_payout']
        if r.random() < 0.3:
            rule['refund_window'] = ag['refund_window_days']
        if self.chance(0.25, 'caps'):
            rule['cap_line'] = fmt(self.limit_amount(1, 200) * scale)
        if self.chance(0.2, 'floors'):
            rule['floor_line'] = fmt(self.limit_amount(0, 2) * scale)
        if self.chance(0.2, 'caps'):
            rule['cap_customer'] = fmt(self.limit_amount(5, 800) * scale)
        if self.chance(0.15, 'caps'):
            rule['cap_reseller'] = fmt(self.limit_amount(50, 5000) * scale)
        if self.chance(0.15, 'floors'):
            rule['floor_customer'] = fmt(self.limit_amount(0, 30) * scale)
        if self.chance(0.15, 'floors'):
            rule['floor_reseller'] = fmt(self.limit_amount(0, 3000) * scale)
        # caps never below floors of the same scope
        for cap, flo in (('cap_line', 'floor_line'), ('cap_customer', 'floor_customer'), ('cap_reseller', 'floor_reseller')):
            if cap in rule and flo in rule and D(rule[cap]) < D(rule[flo]):
                rule[cap], rule[flo] = rule[flo], rule[cap]
        if self.on['tiers'] and r.random() < 0.5:
            for name in r.sample(['spend', 'vol', 'gold_band'], r.randint(1, 2)):
                rule['tiers'][name] = self.make_tiers(name, mylines)
        graduated = any(t['mode'] == 'graduated' for t in rule['tiers'].values())
        if graduated and 'eligible' in rule and 'credit' in rule['eligible']:
            rule['eligible'].remove('credit')
            if not rule['eligible']:
                rule['eligible'] = ['usage']
        unused = set(rule['tiers'])
        nclauses = r.randint(1, 7)
        tries = 0
        while len(rule['clauses']) < nclauses and tries < 60:
            tries += 1
            level = r.choice([3, 2, 2, 1, 1, 0])
            monthly_only = self.on['proration'] and level in (2, 3) and r.random() < 0.3
            cond = self.make_clause_conds(level, monthly_only)
            cl = {'conds': cond}
            if any(ambiguous(cl, o) or same_conds(cl, o) for o in rule['clauses']):
                continue
            cl['pay'] = self.make_pay(rule, unused, monthly_only)
            self.clause_limits(cl, rule, scale)
            rule['clauses'].append(cl)
        if unused or r.random() < 0.85:
            cl = {'otherwise': True, 'pay': self.make_pay(rule, unused, False)}
            self.clause_limits(cl, rule, scale)
            rule['clauses'].append(cl)
        for name in list(unused):          # every schedule must be used
            del rule['tiers'][name]
        # write clauses most specific first (ties in written order)
        rule['clauses'].sort(key=lambda c: -spec(c))
        for c in rule['clauses']:
            c['text'] = render_clause(c)
        return rule

    def make_pay(self, rule, unused, monthly_only):
        r = self.rng
        ccy_scale = D(1) if CURRENCIES[rule['currency']] else D(100)
        if monthly_only:
            amt = fmt(self.limit_amount(1, 300) * ccy_scale)
            return {'type': r.choice(['per_month', 'prorated', 'prorated']), 'amount': amt}
        if rule['tiers'] and (unused or r.random() < 0.3):
            name = sorted(unused)[0] if unused else r.choice(sorted(rule['tiers']))
            unused.discard(name)
            return {'type': 'tiers', 'name': name}
        if self.on['fixed'] and r.random() < 0.12:
            return {'type': 'per_line', 'amount': fmt(self.limit_amount(0, 5) * ccy_scale)}
        return {'type': 'percent', 'rate': fmt(self.rate_pct())}

    def clause_limits(self, cl, rule, scale):
        r = self.rng
        if self.chance(0.12, 'caps'):
            cl['cap'] = fmt(self.limit_amount(1, 100) * scale)
        if self.chance(0.1, 'floors'):
            cl['floor'] = fmt(self.limit_amount(0, 3) * scale)
        # no cap below any floor per line (clause or rule-wide)
        caps = [D(x) for x in (cl.get('cap'), rule.get('cap_line')) if x is not None]
        flos = [D(x) for x in (cl.get('floor'), rule.get('floor_line')) if x is not None]
        if caps and flos and min(caps) < max(flos):
            if 'cap' in cl:
                cl['cap'] = fmt(max(max(flos), D(cl['cap'])))
            if 'floor' in cl and D(cl['floor']) > min(caps):
                del cl['floor']
            caps = [D(x) for x in (cl.get('cap'), rule.get('cap_line')) if x is not None]
            flos = [D(x) for x in (cl.get('floor'), rule.get('floor_line')) if x is not None]
            if caps and flos and min(caps) < max(flos):
                cl.pop('cap', None)

    # ------------------------------------------------------------ FX
    def build_fx(self):
        r = self.rng
        self.fx = []
        pairs = set()
        for l in self.lines:
            ag = self.resellers[l['reseller_id'] - 1]['agreements'][0]
            if l['billing_currency'] != ag['currency']:
                pairs.add((l['billing_currency'], ag['currency']))
        base_rate = {}
        for p in self.periods:
            y, m = int(p[:4]), int(p[5:])
            last = dt.date(y + (m == 12), m % 12 + 1, 1) - dt.timedelta(days=1)
            for i, (base, quote) in enumerate(sorted(pairs)):
                if p in self.skip_fx and i == 0:
                    continue           # no rate: the lines of this pair earn nothing and block the run
                br = base_rate.setdefault((base, quote), USD_VALUE[base] / USD_VALUE[quote])
                dec = r.choice([2, 4, 6, 8, self.a.fx_decimals])
                rate = (br * self.dec_between('0.95', '1.05', 4)).quantize(D(1).scaleb(-dec), context=CTX)
                if rate <= 0:
                    rate = D(1).scaleb(-dec)
                srcs = ['ecb'] + (['bank'] if r.random() < 0.3 else [])
                if r.random() < 0.2:       # a rate dated another day must not be used
                    self.add_fx(base, quote, last - dt.timedelta(days=1), rate * 2, 'aaa')
                for s in srcs:
                    other = (rate * D('1.01')).quantize(D(1).scaleb(-dec), context=CTX)   # settle holds 8 decimals
                    self.add_fx(base, quote, last, rate if s == 'bank' or len(srcs) == 1 else other, s)
                    if r.random() < 0.2:   # a corrected version
                        rate2 = (rate * self.dec_between('0.9', '1.1', 4)).quantize(D(1).scaleb(-dec), context=CTX) or rate
                        self.add_fx(base, quote, last, rate2, s)

    def add_fx(self, base, quote, d, rate, source):
        ver = 1 + sum(1 for f in self.fx if (f['base'], f['quote'], f['date'], f['source']) == (base, quote, d.isoformat(), source))
        self.fx.append({'id': self.next_fx, 'base': base, 'quote': quote, 'date': d.isoformat(), 'rate': fmt(rate),
                        'source': source, 'version': ver})
        self.next_fx += 1

    # ------------------------------------------------------------ output
    def scenario(self):
        return {'seed': self.a.seed, 'periods': self.periods, 'settle_order': self.periods,
                'currencies': CURRENCIES, 'products': dict(PRODUCTS, **MONTHLY),
                'resellers': self.resellers, 'fx': self.fx, 'lines': self.lines, 'phase2': self.phase2,
                'options': {'lines': self.a.lines, 'decimals': self.a.decimals,
                            'disabled': sorted(f for f in FEATURES if not self.on[f])}}

    def bill_line_sql(self, phase):
        out = []
        cols = ('reseller_id, line_key, revision, customer_id, content_hash, source_item, source_record_id, '
                'billing_account_id, sub_account_id, billing_period_start, charge_period_start, charge_period_end, '
                'charge_category, product_code, service_name, sku_id, region_id, resource_id, billing_currency, '
                'list_cost, discount, coupon_deduction, billed_cost, amount_paid, original_line_key, tags')
        rows = []
        for l in self.lines:
            if l.get('phase', 1) != phase:
                continue
            h = hashlib.sha256(json.dumps(l, sort_keys=True).encode()).hexdigest()
            disc = D(l['list_cost']) - D(l['billed_cost'])
            coup = D(l['billed_cost']) - D(l['amount_paid'])
            rows.append('(%d, %s, %d, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)' % (
                l['reseller_id'], sql_str(l['line_key']), l['revision'],
                'NULL' if l['customer_id'] is None else l['customer_id'], "'\\x%s'::bytea" % h,
                "'FOCUS'", sql_str(l['line_key'].split('#')[0]), sql_str(l['account']), sql_str(l['account']),
                sql_str(l['billing_period_start']), sql_str(l['charge_period_start']), sql_str(l['charge_period_end']),
                sql_str(l['charge_category']), sql_str(l['product_code']), sql_str(l['product_code']),
                sql_str(l['sku_id']) if l['sku_id'] else 'NULL', sql_str(l['region_id']) if l['region_id'] else 'NULL',
                sql_str(l['line_key'].split('/')[2]), sql_str(l['billing_currency']), l['list_cost'], fmt(disc), fmt(coup),
                l['billed_cost'], l['amount_paid'], sql_str(l['original_line_key']) if l['original_line_key'] else 'NULL',
                sql_str(json.dumps(l['tags'], sort_keys=True)) + '::jsonb'))
        for i in range(0, len(rows), 500):
            out.append('INSERT INTO settle.bill_line (%s) VALUES\n%s;' % (cols, ',\n'.join(rows[i:i + 500])))
        return out

    def sql_phase2(self):
        out = ['-- phase 2 of test/diff/gen.py --seed %s: late revisions after the lock' % self.a.seed,
               '\\set ON_ERROR_STOP 1', 'SET client_min_messages = warning;']
        return '\n'.join(out + self.bill_line_sql(2)) + '\n'

    def sql(self):
        out = ['-- generated by test/diff/gen.py --seed %s --lines %s --decimals %s' % (self.a.seed, self.a.lines, self.a.decimals),
               '\\set ON_ERROR_STOP 1', 'SET client_min_messages = warning;',
               "SET settle.reason = 'differential test scenario';",
               'CREATE FUNCTION pg_temp.expect(got bigint, want bigint, what text) RETURNS void LANGUAGE plpgsql AS '
               "$$BEGIN IF got IS DISTINCT FROM want THEN RAISE EXCEPTION 'gen.py: % got % expected %', what, got, want; END IF; END$$;"]
        if self.on['proration']:
            for p, c in MONTHLY.items():
                out.append("SELECT settle.add_product(%s, %s, %s);" % (sql_str(p), sql_str(c), sql_str('licence ' + p)))
        for rs in self.resellers:
            out.append("SELECT pg_temp.expect(settle.add_reseller(%s, %s), %d, 'reseller');" % (
                sql_str(rs['code']), sql_str('Reseller ' + rs['code']), rs['id']))
            for c in rs['customers']:
                out.append("SELECT pg_temp.expect(settle.add_customer(%s, %s, %s, %s, %s::jsonb), %d, 'customer');" % (
                    sql_str(rs['code']), sql_str(c['code']), sql_str('Customer ' + c['code']), sql_str(c['segment']),
                    sql_str(json.dumps(c['tags'], sort_keys=True)), c['id']))
                out.append("SELECT settle.map_account(%s, %s, %s);" % (sql_str(c['account']), sql_str(rs['code']), sql_str(c['code'])))
            for ag in rs['agreements']:
                out.append("SELECT pg_temp.expect(settle.set_agreement(%s, %s, %s, %s, %s, %s, %d, 0.01, 0, %s), %d, 'agreement');" % (
                    sql_str(rs['code']), sql_str(ag['effective_from']), sql_str(ag['currency']),
                    sql_str(ag['effective_to'] or 'infinity'), sql_str(ag['rounding']), sql_str(ag['date_basis']),
                    ag['refund_window_days'], ag['minimum_payout'], ag['id']))
            for v in rs['rule_versions']:
                out.append("SELECT pg_temp.expect((settle.publish_rule(%s, %d, %s, $rule$\n%s$rule$::settle.rule, %s, %s)).version, %d, 'rule version');" % (
                    sql_str(rs['code']), v['agreement_id'], sql_str(v['effective_from']), v['text'],
                    sql_str('version %d' % v['version']), sql_str(v['effective_to'] or 'infinity'), v['version']))
        for f in self.fx:
            out.append("SELECT pg_temp.expect(settle.add_fx_rate(%s, %s, %s, %s, %s), %d, 'fx rate');" % (
                sql_str(f['base']), sql_str(f['quote']), sql_str(f['date']), f['rate'], sql_str(f['source']), f['id']))
        out += self.bill_line_sql(1)
        return '\n'.join(out) + '\n'


# ---------------------------------------------------------------- rule text

def spec(cl):
    if cl.get('otherwise'):
        return -1
    c = cl['conds']
    lv = 3 if 'sku' in c else 2 if 'product' in c else 1 if 'category' in c else 0
    return 16 * lv + sum(1 for k in ('charge', 'region', 'segment') if k in c) + len(c.get('tags', {}))


def dims(cl):
    c = cl['conds']
    out = {}
    for k in ('sku', 'product', 'category', 'region', 'segment'):
        if k in c:
            out[k] = set(c[k])
    if 'charge' in c:
        out['charge'] = {v.lower() for v in c['charge']}
    for k, v in c.get('tags', {}).items():
        out['tag:' + k] = set(v)
    return out


def ambiguous(a, b):
    """Equal specificity and no shared dimension with disjoint values (rules.md §3)."""
    if a.get('otherwise') or b.get('otherwise') or spec(a) != spec(b):
        return False
    da, db = dims(a), dims(b)
    return not any(k in db and not (da[k] & db[k]) for k in da)


def same_conds(a, b):
    return not a.get('otherwise') and not b.get('otherwise') and dims(a) == dims(b)


def render_pay(p):
    t = p['type']
    if t == 'percent':
        return 'pay %s%%' % p['rate']
    if t == 'per_line':
        return 'pay %s per line' % p['amount']
    if t == 'per_month':
        return 'pay %s per month' % p['amount']
    if t == 'prorated':
        return 'pay %s per month prorated by active days' % p['amount']
    return 'pay tiers %s' % p['name']


def render_clause(cl):
    parts = []
    if cl.get('otherwise'):
        s = 'otherwise ' + render_pay(cl['pay'])
    else:
        c = cl['conds']
        for k in ('sku', 'product', 'category', 'charge', 'region', 'segment'):
            if k in c:
                parts.append('%s %s' % (k, ', '.join(bare(v) for v in c[k])))
        for k, vals in sorted(c.get('tags', {}).items()):
            parts.append('tag %s = %s' % (bare(k), ', '.join(bare(v) for v in vals)))
        s = 'when ' + ' and '.join(parts) + ' ' + render_pay(cl['pay'])
    lim = []
    if cl.get('cap') is not None:
        lim.append('cap %s per line' % cl['cap'])
    if cl.get('floor') is not None:
        lim.append('floor %s per line' % cl['floor'])
    if lim:
        s += ' with ' + ' and '.join(lim)
    return s


def render_rule(rule):
    out = ['# generated by test/diff/gen.py', 'currency %s' % rule['currency']]
    if 'rounding' in rule:
        out.append('rounding %s' % rule['rounding'])
    if 'basis' in rule:
        out.append('basis %s' % rule['basis'])
    if 'eligible' in rule:
        out.append('eligible %s' % ', '.join(rule['eligible']))
    if 'minimum_payout' in rule:
        out.append('minimum payout %s' % rule['minimum_payout'])
    if 'refund_window' in rule:
        out.append('refunds reverse at original rate within %d days' % rule['refund_window'])
    for key, text in (('cap_line', 'cap %s per line'), ('floor_line', 'floor %s per line'),
                      ('cap_customer', 'cap %s per customer per period'), ('cap_reseller', 'cap %s per reseller per period'),
                      ('floor_customer', 'floor %s per customer per period'), ('floor_reseller', 'floor %s per reseller per period')):
        if key in rule:
            out.append(text % rule[key])
    for name, t in sorted(rule['tiers'].items()):
        meas = {'customer_spend': 'customer monthly spend', 'reseller_spend': 'reseller monthly spend',
                'reseller_volume': 'reseller monthly volume'}[t['measure']]
        out.append('tiers %s on %s %s' % (name, meas, t['mode']))
        for b in t['written']:
            out.append('  from %s%s pay %s%%' % (b['from'], ' to %s' % b['to'] if b['to'] is not None else '', b['rate']))
    for c in rule['clauses']:
        out.append(c['text'] + ('   -- clause' if len(c['text']) < 40 and False else ''))
    return '\n'.join(out) + '\n'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--seed', type=int, required=True)
    ap.add_argument('--lines', type=int, default=300)
    ap.add_argument('--decimals', type=int, default=11, help='most decimals of a bill amount (real FOCUS files: 11)')
    ap.add_argument('--fx-decimals', type=int, default=8, dest='fx_decimals')
    ap.add_argument('--periods', type=int, default=3)
    ap.add_argument('--resellers', type=int, default=0, help='0 = random 1-3')
    ap.add_argument('--customers', type=int, default=40, help='most customers per reseller')
    ap.add_argument('--no', action='append', choices=FEATURES, help='turn a feature off')
    ap.add_argument('--out', default='.')
    a = ap.parse_args()
    g = Gen(a)
    g.build()
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, 'scenario.json'), 'w') as f:
        json.dump(g.scenario(), f, indent=1, sort_keys=True)
    with open(os.path.join(a.out, 'load.sql'), 'w') as f:
        f.write(g.sql())
    with open(os.path.join(a.out, 'phase2.sql'), 'w') as f:
        f.write(g.sql_phase2() if g.phase2 else '')


if __name__ == '__main__':
    main()
