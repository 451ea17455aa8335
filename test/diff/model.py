#!/usr/bin/env python3
"""Independent reference model of settle's documented settlement semantics.

Written from docs/rules.md, docs/settlement.md, docs/reconciliation.md,
docs/statements.md and docs/model.md only (not from the engine's sources).
Python standard library only; all money is decimal.Decimal (or exact
integers / fractions), never float.

    python3 model.py scenario.json                      # print the expected lineage and statements
    python3 model.py scenario.json --compare DIR        # compare with DIR/lineage.csv, DIR/statement.csv

The scenario format is written by gen.py (see README.md).  Where the docs
leave a choice open, the model takes the reading named in INTERPRETATIONS
below; each disagreement report names the documented rule it relates to.
"""
import argparse
import csv
import datetime as dt
import json
import os
import re
import sys
from decimal import (Decimal, Context, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_EVEN,
                     ROUND_HALF_UP, localcontext)
from fractions import Fraction

D = Decimal
CTX = Context(prec=400)          # far beyond any product we form: arithmetic is exact
ZERO = D(0)

# Readings the model takes where the docs leave a choice open.  Each can be
# flipped from the command line (--opt name=value) to see which reading the
# engine takes when they disagree.
INTERPRETATIONS = {
    # settlement.md "converted ... at the FX rate ..., carried to 8 decimal
    # places": the converted amount is carried to 8 places, half-even.
    # Alternatives: 'rate8' (the rate is carried to 8 places, product exact),
    # 'exact' (no rounding).
    'fx_mode': 'amount8',
    # The bill line's tags and the customer's tags both count for a `tag`
    # condition (customer.tags: "segment and tags are matched by commission
    # rules"; rules.md: "the bill line has tag env ..."); on a shared key the
    # line's value wins.  The generator keeps the keys apart.
    'tags': 'merge',
    # The spend measure of tiers: the settlement-currency basis of the
    # period's eligible charge lines (refund reversals excluded).
    'spend_refunds': 'exclude',
    # Refund reversals are basis x the original's rate, not limited again:
    # settlement.md "reversed at the rate the original earned" and the
    # reconciliation refund_rate check "unrounded = basis x original rate".
    # rules.md §6 says "a refund is limited like a charge" (evaluate_rule);
    # 'yes' applies the original clause's per-line cap and floor instead.
    'refund_line_limits': 'no',
    # A line without a customer blocks the run (settlement.md "nothing
    # guessed"); it is still valued (segment and customer tags unknown): the
    # docs' "a line that cannot be valued earns nothing" does not cover it.
    # Alternative: 'nothing'.
    'customerless': 'valued',
    # What a period floor is compared with: the docs say only "period totals
    # ... a shortfall becomes a top-up".  The model compares the commission of
    # the period's charge lines (kind c; refund reversals and corrections not
    # counted), plus the customer top-ups for the reseller floor, which is the
    # reading the engine was seen to take.  Alternative: 'net' (every line).
    'floor_base': 'charges',
    # A correction of a line that earned a fixed amount (pay N per line / per
    # month / prorated): the new revision earns the same fixed amount with the
    # sign of its basis (0 for a zero basis), so the correction is the
    # difference ('earn').  Alternative: 'reverse_whole'.
    'correction_fixed': 'earn',
    # Residual units of the rounding go to the largest remainders, ties in
    # line key order (settlement.md), floor top-ups included by their keys
    # (floor:customer:<id>, floor:reseller: the engine's names; the docs name
    # none).  Alternative: 'generated' (charges and reversals in line key
    # order, then corrections, adjustments and top-ups in the order made).
    'tie_order': 'key',
    # Which rule version's basis setting (billed_cost, list_cost, amount_paid)
    # values a refund: the original's (rules.md §7 "evaluate the refund with
    # the rule version that was in force for the original charge").
    # Alternative: 'refund_date' (the version in force on the refund's date).
    'refund_basis_version': 'original',
    # Which dates a refund's age (for the refund window) is measured between:
    # the two lines' dates by the agreement's date_basis (rules.md §7: the
    # UTC charge period starts under service_month, the billing period starts
    # under invoice_period; decided as finding F3).  Alternative: 'charge'
    # (the charge period starts under either date basis).
    'refund_age_date': 'basis',
    # Which customers a floor per customer per period tops up: the docs do not
    # say.  The model tops up customers with an eligible line of non-zero
    # basis in the period (as the per-line floor applies only to a non-zero
    # basis, rules.md §6), which is what the engine was seen to do; likewise
    # a reseller floor needs such a line of the reseller.
    # Alternatives: 'positive_total', 'any_line', 'nonzero_commission'.
    'floor_customers': 'nonzero_basis',
    # Period floors and the per-period settings are read from the rule
    # version in force on the last day of the period.
    'period_rule_date': 'last_day',
    # Floor top-ups (kind f) are counted in the statement's adjustments
    # (statements.md lists them as `adjustment` records).
    'f_in': 'adjustments',
    # FX of a refund reversal deferred into the next period: that period's
    # rate (the period being settled).
    'deferred_fx': 'settling_period',
    # The date that picks the rule version of a line: the line's date by the
    # agreement's date_basis (settlement.md "the rule version in force on each
    # line's date"; under invoice_period the billing period start).
    # Alternative: 'charge' (the UTC date of the charge period start).
    'version_date': 'basis',
    # A tier measure below 0 (eligible credits outweigh the charges):
    # rules.md §5 "A measure below 0": the first band, which starts at 0,
    # extends below 0 in both modes -- an all-units total below 0 takes the
    # first band's rate (line caps and floors apply as to any line), the part
    # of a graduated line below 0 is taken at the first band's rate, and a
    # zero line of a graduated schedule at a spend below 0 is in tier 1.
    # Finding F9 (fixed).  Alternatives: 'no_tier' (engine version 2: an
    # all-units total below 0 is in no band -- evaluate_rule status no_tier,
    # the clause matches, the line earns nothing and no line cap or floor
    # applies; the part of a graduated line below 0 at the first band's rate,
    # but a zero graduated line at a spend below 0 in no band), 'no_band'
    # (nothing below 0 is in a band in either mode, line limits still apply).
    'below_zero': 'first_band',
    # What a period cap's "commission to date" counts: rules.md §6 "period
    # caps are consumed only by positive commission" -- the positive
    # commission of the lines before (line key order).  Alternative: 'net'
    # (a negative line's commission, e.g. an eligible credit, gives room
    # back: the engine's reading, finding F10).
    'cap_todate': 'positive',
    # The sign of a per-line floor: rules.md §6 limits apply to the magnitude,
    # "a negative basis ... is limited like a charge", so a line of negative
    # basis is floored to -floor, also when its commission before limits is 0
    # (pay 0%, pay 0 per line).  Alternative: 'commission' (the sign of the
    # commission, + for 0: the engine's reading, finding F11).
    'floor_sign': 'basis',
    # A charge in a currency without an FX rate for its period (settlement.md
    # "Nothing guessed", decided as finding F12): it is valued at a basis of
    # 0 -- it earns nothing, keeps the clause, tier and rate its rule gives
    # on its lineage row, counts as a line for volume tiers -- and a refund of
    # it in a period that has the rate is reversed at that rate.
    # Alternative: 'nothing' (the line is valued by no clause, no rate, not
    # counted; a refund of it reverses nothing: the model's earlier reading).
    'unconverted': 'basis0',
}

MODES = {'half_even': ROUND_HALF_EVEN, 'half_up': ROUND_HALF_UP, 'down': ROUND_DOWN}

# Where each behaviour is documented, for disagreement reports.
DOC = {
    'clause': 'rules.md §3 clauses and precedence (most specific wins)',
    'tags': 'rules.md §3 tag condition (bill line tags)',
    'tier_all': 'rules.md §5 all-units tiers / settlement.md tiers (period total)',
    'tier_grad': 'rules.md §5 graduated tiers / settlement.md tiers (spend before, line key order)',
    'tier_vol': 'rules.md §5 volume tiers / settlement.md limits (volume counts bill lines)',
    'pct': 'rules.md §4 pay N%',
    'per_line': 'rules.md §4 pay N per line',
    'per_month': 'rules.md §4 pay N per month',
    'prorated': 'rules.md §4 prorated by active days, §8 16-decimal quotient',
    'line_cap': 'rules.md §6 cap per line (magnitude)',
    'line_floor': 'rules.md §6 floor per line (non-zero basis, magnitude)',
    'cust_cap': 'rules.md §6 / settlement.md caps: per customer per period, line key order',
    'res_cap': 'rules.md §6 / settlement.md caps: per reseller per period, line key order',
    'cust_floor': 'settlement.md floors: per customer top-up (kind f)',
    'res_floor': 'settlement.md floors: per reseller top-up (kind f)',
    'basis': 'rules.md §7 basis billed_cost | list_cost | amount_paid',
    'eligible': 'rules.md §2/§7 eligible charge categories (not_eligible earns 0)',
    'fx': 'settlement.md currency: FX dated the last day of the period, first source, latest version, 8 decimals',
    'refund': 'settlement.md refunds: reversed at the rate the original earned; fixed reversed whole',
    'refund_window': 'rules.md §7 / settlement.md refunds: within the window (days between the lines\' dates by date_basis) in its own period, else the next',
    'version': 'settlement.md: the rule version in force on each line\'s date',
    'revision': 'settlement.md lines: the current revision of every bill line',
    'period': 'settlement.md lines: dated in the period by date_basis (UTC date of charge start / billing period)',
    'rounding': 'settlement.md rounding: total rounded once; lines floored, residual units to largest remainders (ties: line key order)',
    'carry': 'settlement.md carry-forward: previous carry-forward added; below the minimum payout (or negative) carries forward',
    'statement': 'statements.md / reconciliation.md statement check: totals per kind, Σ lines = total',
    'no_match': 'rules.md §3 no clause matches: earns nothing',
    'adjustment': 'finance-guide.md §4 / reference.md approve_adjustment: an approved adjustment is a line of kind a in its target period',
    'correction': 'settlement.md corrections: revised after the lock, first open period, at the original rate (kind x)',
    'precision': 'rules.md §8 / settlement.md nothing guessed: basis x rate beyond 16 decimals earns nothing, validation exception, run blocked',
}


def opt(name):
    return INTERPRETATIONS[name]


def dec(x):
    if x is None or x == '':
        return None
    return D(str(x))


def q16(fr):
    """Round a Fraction half-even at the 16th decimal (rules.md §8)."""
    scaled = fr * 10 ** 16
    n, d = scaled.numerator, scaled.denominator
    qt, r = divmod(n, d)          # floor division (works for negatives)
    twice = 2 * r
    if twice > d or (twice == d and qt % 2 == 1):
        qt += 1
    return D(qt).scaleb(-16, CTX)


def mul(a, b):
    return CTX.multiply(a, b)


def add(a, b):
    return CTX.add(a, b)


def held16(x):
    """True when an exact amount can be held at 16 decimals (rules.md §8: basis
    x rate is kept when its digits below 10^-16 are zero, never rounded)."""
    return x == x.quantize(D('1e-16'), rounding=ROUND_DOWN, context=CTX)


def round_money(x, minor, mode):
    return x.quantize(D(1).scaleb(-minor), rounding=MODES[mode], context=CTX)


def floor_money(x, minor):
    return x.quantize(D(1).scaleb(-minor), rounding=ROUND_FLOOR, context=CTX)


def sign(x):
    return 1 if x > 0 else (-1 if x < 0 else 0)


def date_of(ts):
    """UTC calendar date of an ISO timestamp with zone."""
    t = dt.datetime.fromisoformat(ts.replace('Z', '+00:00'))
    return t.astimezone(dt.timezone.utc).date()


def period_of(d):
    return '%04d-%02d' % (d.year, d.month)


def period_bounds(p):
    y, m = int(p[:4]), int(p[5:])
    first = dt.date(y, m, 1)
    nxt = dt.date(y + (m == 12), m % 12 + 1, 1)
    return first, nxt - dt.timedelta(days=1)


def prev_period(p):
    first, _ = period_bounds(p)
    return period_of(first - dt.timedelta(days=1))


# ---------------------------------------------------------------- rules

SPEC_LEVEL = {'sku': 3, 'product': 2, 'category': 1}
QUALIFIERS = ('charge', 'region', 'segment')


def specificity(cl):
    if cl.get('otherwise'):
        return -1
    c = cl['conds']
    level = max([SPEC_LEVEL[k] for k in SPEC_LEVEL if k in c] or [0])
    quals = sum(1 for k in QUALIFIERS if k in c) + len(c.get('tags', {}))
    return 16 * level + quals


def ordered_clauses(rule):
    """Canonical clause order: most specific first; equal specificity keeps
    the written order (the docs do not say; a stable sort is assumed)."""
    idx = list(range(len(rule['clauses'])))
    idx.sort(key=lambda i: -specificity(rule['clauses'][i]))
    return [rule['clauses'][i] for i in idx]


def clause_matches(cl, line, cust, category):
    if cl.get('otherwise'):
        return True
    c = cl['conds']
    if 'sku' in c and line.get('sku_id') not in c['sku']:
        return False
    if 'product' in c and line.get('product_code') not in c['product']:
        return False
    if 'category' in c and category not in c['category']:
        return False
    if 'charge' in c:
        cc = (line.get('charge_category') or '').lower()
        if cc not in [v.lower() for v in c['charge']]:
            return False
    if 'region' in c and line.get('region_id') not in c['region']:
        return False
    if 'segment' in c and cust.get('segment') not in c['segment']:
        return False
    if c.get('tags'):
        tags = effective_tags(line, cust)
        for k, vals in c['tags'].items():
            v = tags.get(k)
            if not isinstance(v, str) or v not in vals:
                return False
    return True


def effective_tags(line, cust):
    mode = opt('tags')
    if mode == 'line':
        return dict(line.get('tags') or {})
    if mode == 'customer':
        return dict(cust.get('tags') or {})
    t = dict(cust.get('tags') or {})
    t.update(line.get('tags') or {})
    return t


def band_of(bands, amount, below_zero=None):
    """1-based band whose [from, to) holds amount; None when none does.  An
    amount below 0 is in the first band when it starts at 0 (rules.md §5
    "A measure below 0"), unless the reading says otherwise (below_zero:
    'no_band' for either mode, 'no_tier' for all units)."""
    if amount < 0 and below_zero == 'first_band' and min(dec(b['from']) for b in bands) == 0:
        return min(range(len(bands)), key=lambda i: dec(bands[i]['from'])) + 1
    for i, b in enumerate(bands):
        lo, hi = dec(b['from']), dec(b.get('to'))
        if amount >= lo and (hi is None or amount < hi):
            return i + 1
    return None


def graduated(bands, before, basis):
    """Commission of [before, before+basis) over the bands; returns
    (commission, tier reached, single band rate or None)."""
    lo_, hi_ = before, add(before, basis)
    neg = False
    if hi_ < lo_:
        lo_, hi_, neg = hi_, lo_, True
    total = ZERO
    touched = []
    exact = True
    lowest = min(dec(b['from']) for b in bands)
    for i, b in enumerate(bands):
        blo, bhi = dec(b['from']), dec(b.get('to'))
        s = lo_ if (blo == lowest and opt('below_zero') != 'no_band') else max(lo_, blo)
        e = hi_ if bhi is None else min(hi_, bhi)
        if e > s:
            part = mul(CTX.subtract(e, s), CTX.divide(dec(b['rate']), D(100)))
            exact = exact and held16(part)
            total = add(total, part)
            touched.append(i + 1)
    if basis == 0:
        tier = band_of(bands, before, opt('below_zero'))
    else:
        tier = touched[-1] if touched else None
    # the lineage rate of a graduated line: the rate of the band reached
    # (rules.md §5 "tier band reached"; a refund reverses at it, settlement.md)
    rate = CTX.divide(dec(bands[tier - 1]['rate']), D(100)) if tier else None
    return (-total if neg else total), tier, rate, exact


# ---------------------------------------------------------------- scenario

class Model:
    def __init__(self, sc):
        self.sc = sc
        self.minor = {k: int(v) for k, v in sc['currencies'].items()}
        self.products = sc['products']
        self.fx = sc['fx']
        self.customers = {}
        self.resellers = {}
        for r in sc['resellers']:
            self.resellers[r['id']] = r
            for c in r['customers']:
                self.customers[c['id']] = c
            for v in r['rule_versions']:
                v['_ordered'] = ordered_clauses(v['rule'])
        self.phase = 1
        self.locked = set()  # (reseller_id, period) locked after phase 1
        self.adjustments = []   # approved adjustments, in force from phase 2
        self.load_lines(1)
        self.results = {}   # (reseller_id, period) -> dict(rows, statement)
        self.lineage = {}   # (reseller_id, line_key) -> the c row that settled it
        self.locked_lineage = {}   # (reseller_id, period) -> {line_key: c row} of a locked run

    def load_lines(self, phase):
        """The current revision of every line ingested up to this phase."""
        cur = {}
        for ln in self.sc['lines']:
            if ln.get('phase', 1) > phase:
                continue
            k = (ln['reseller_id'], ln['line_key'])
            if k not in cur or ln['revision'] > cur[k]['revision']:
                cur[k] = ln
        self.lines = cur

    # -- helpers
    def agreement_for(self, r, period):
        first, last = period_bounds(period)
        for a in r['agreements']:
            af = dt.date.fromisoformat(a['effective_from'])
            at = dt.date.fromisoformat(a['effective_to']) if a.get('effective_to') else dt.date.max
            if af <= last and at > first:
                return a
        return None

    def version_on(self, r, agreement, d):
        for v in r['rule_versions']:
            if v['agreement_id'] != agreement['id']:
                continue
            vf = dt.date.fromisoformat(v['effective_from'])
            vt = dt.date.fromisoformat(v['effective_to']) if v.get('effective_to') else dt.date.max
            if vf <= d < vt:
                return v
        return None

    def line_date(self, ln, agreement):
        if agreement['date_basis'] == 'invoice_period':
            return dt.date.fromisoformat(ln['billing_period_start'])
        return date_of(ln['charge_period_start'])

    def fx_rate(self, base, quote, period):
        _, last = period_bounds(period)
        cands = [f for f in self.fx if f['base'] == base and f['quote'] == quote
                 and f['date'] == last.isoformat()]
        if not cands:
            return None
        src = min(f['source'] for f in cands)
        cands = [f for f in cands if f['source'] == src]
        return max(cands, key=lambda f: f['version'])

    def convert(self, amount, ln, agreement, period, why):
        """Amount of a bill line in the settlement currency; (value, fx_id) or
        (None, None) when no rate exists."""
        if amount is None:
            amount = ZERO
        cur = (ln.get('billing_currency') or agreement['currency']).strip()
        if cur == agreement['currency']:
            return amount, None
        f = self.fx_rate(cur, agreement['currency'], period)
        if f is None:
            why.append('no FX rate %s->%s on the last day of %s (%s)' % (cur, agreement['currency'], period, DOC['fx']))
            return None, None
        rate = dec(f['rate'])
        mode = opt('fx_mode')
        if mode == 'rate8':
            rate = rate.quantize(D('1e-8'), rounding=ROUND_HALF_EVEN, context=CTX)
            v = mul(amount, rate)
        elif mode == 'exact':
            v = mul(amount, rate)
        else:
            v = mul(amount, rate).quantize(D('1e-8'), rounding=ROUND_HALF_EVEN, context=CTX)
        why.append('FX %s->%s %s (id %d) (%s)' % (cur, agreement['currency'], f['rate'], f['id'], DOC['fx']))
        return v, f['id']

    def basis_amount(self, rule, ln):
        b = rule.get('basis') or 'billed_cost'
        return dec(ln.get(b)) if ln.get(b) is not None else ZERO

    def eligible(self, rule, ln):
        el = rule.get('eligible') or ['usage', 'purchase']
        return (ln.get('charge_category') or '').lower() in [e.lower() for e in el]

    # -- settlement of one reseller's period
    def settle(self, rid, period):
        r = self.resellers[rid]
        ag = self.agreement_for(r, period)
        if ag is None:
            return None
        first, last = period_bounds(period)
        pprev = prev_period(period)
        window = ag['refund_window_days']
        cur_ccy = ag['currency']
        minor = self.minor[cur_ccy]

        charges, refunds = [], []
        for (lr, key), ln in sorted(self.lines.items()):
            if lr != rid:
                continue
            d = self.line_date(ln, ag)
            p = period_of(d)
            if ln.get('original_line_key'):
                orig = self.lines.get((rid, ln['original_line_key']))
                age = None
                if orig is not None:
                    if opt('refund_age_date') == 'basis':
                        age = (d - self.line_date(orig, ag)).days
                    else:
                        age = (date_of(ln['charge_period_start']) - date_of(orig['charge_period_start'])).days
                deferred = age is not None and age > window
                if p == period and not deferred:
                    refunds.append((ln, orig, age, False))
                elif p == pprev and deferred:
                    refunds.append((ln, orig, age, True))
            elif p == period:
                charges.append(ln)

        rows = []
        blocked = False
        # pass 0: versions, eligibility, basis in settlement currency, spend
        info = {}
        cust_spend, res_spend, res_volume = {}, ZERO, 0
        for ln in charges:
            why = []
            vdate = date_of(ln['charge_period_start']) if opt('version_date') == 'charge' else self.line_date(ln, ag)
            v = self.version_on(r, ag, vdate)
            it = {'v': v, 'why': why}
            info[ln['line_key']] = it
            if v is None:
                why.append('no rule version in force on %s (%s)' % (vdate, DOC['version']))
                blocked = True
                continue
            rule = v['rule']
            it['eligible'] = self.eligible(rule, ln)
            b, fxid = self.convert(self.basis_amount(rule, ln), ln, ag, period, why)
            it['fxid'] = fxid
            if b is None:
                blocked = True
                if opt('unconverted') == 'nothing':
                    it['basis'] = None
                    continue
                # settlement.md nothing guessed: valued at a basis of 0 (finding F12)
                b = ZERO
            it['basis'] = b
            if ln.get('customer_id') is None:
                blocked = True
            if it['eligible']:
                c = ln.get('customer_id')
                cust_spend[c] = add(cust_spend.get(c, ZERO), b)
                res_spend = add(res_spend, b)
                res_volume += 1

        # pass 1: commission lines in line key order
        cust_before, res_before = {}, ZERO
        cust_todate, res_todate = {}, ZERO
        for ln in charges:
            it = info[ln['line_key']]
            cust = self.customers.get(ln.get('customer_id'), {})
            row = {'line_key': ln['line_key'], 'kind': 'c', 'customer_id': ln.get('customer_id'),
                   'revision': ln['revision'], 'why': it['why'], 'dc': set()}
            rows.append(row)
            v = it['v']
            if ln.get('customer_id') is None:
                row['why'].append('line without a customer: the run is blocked (settlement.md nothing guessed)')
                if opt('customerless') == 'nothing':
                    row.update(unrounded=ZERO, rule_version=v['version'] if v else None, fx_rate_id=it.get('fxid'))
                    row['dc'] |= {'clause', 'tier', 'rate', 'basis', 'rule_version', 'fx_rate_id'}
                    continue
            if v is None or it.get('basis') is None:
                row.update(unrounded=ZERO, rule_version=v['version'] if v else None, fx_rate_id=it.get('fxid'))
                row['dc'] |= {'clause', 'tier', 'rate', 'basis', 'rule_version', 'fx_rate_id'}
                if v is not None:
                    # settled (earning nothing, in a blocked run): a refund of it finds it and
                    # reverses nothing; it is not an unlinked refund (seed 1709)
                    self.lineage[(rid, ln['line_key'])] = dict(row, _rule=v['rule'], _clause=None, _ver=v, _period=period)
                continue
            rule = v['rule']
            basis = it['basis']
            row.update(rule_version=v['version'], basis=basis, fx_rate_id=it['fxid'])
            if not it['eligible']:
                row['why'].append('charge category %s not eligible (%s)' % (ln.get('charge_category'), DOC['eligible']))
                row.update(unrounded=ZERO, clause=None, tier=None, rate=None)
                row['dc'] |= {'clause', 'tier', 'rate', 'basis'}
                self.lineage[(rid, ln['line_key'])] = dict(row, _rule=rule, _clause=None, _ver=v, _period=period)
                continue
            c_id = ln.get('customer_id')
            cb = cust_before.get(c_id, ZERO)
            rb = res_before
            cust_before[c_id] = add(cb, basis)
            res_before = add(res_before, basis)
            cat = self.products.get(ln.get('product_code'))
            clause_no, cl = None, None
            for i, c in enumerate(v['_ordered']):
                if clause_matches(c, ln, cust, cat):
                    clause_no, cl = i + 1, c
                    break
            if cl is None:
                row['why'].append('no clause matches (%s)' % DOC['no_match'])
                row.update(unrounded=ZERO, clause=None, tier=None, rate=None)
                row['dc'] |= {'tier', 'rate'}
                self.lineage[(rid, ln['line_key'])] = dict(row, _rule=rule, _clause=None, _ver=v, _period=period)
                continue
            row['why'].append('clause %d "%s" (%s)' % (clause_no, cl['text'], DOC['clause']))
            if cl.get('conds', {}).get('tags'):
                row['why'].append('tag condition (%s)' % DOC['tags'])
            pay = cl['pay']
            tier, rate = None, None
            inexact = None
            t = pay['type']
            if t == 'percent':
                rate = CTX.divide(dec(pay['rate']), D(100))
                com = mul(basis, rate)
                row['why'].append('%s%% of basis %s (%s)' % (pay['rate'], basis, DOC['pct']))
            elif t == 'per_line':
                com = D(sign(basis)) * dec(pay['amount'])
                row['why'].append('%s per line (%s)' % (pay['amount'], DOC['per_line']))
            elif t == 'per_month':
                com = D(sign(basis)) * dec(pay['amount'])
                row['why'].append('%s per month (%s)' % (pay['amount'], DOC['per_month']))
            elif t == 'prorated':
                s = date_of(ln['charge_period_start'])
                e = date_of(ln['charge_period_end'])
                mfirst, mlast = period_bounds(period_of(s))
                days = (min(e, mlast + dt.timedelta(days=1)) - s).days
                dim = mlast.day
                com = q16(Fraction(dec(pay['amount'])) * days / dim) * sign(basis)
                row['why'].append('%s x %d/%d days (%s)' % (pay['amount'], days, dim, DOC['prorated']))
            elif t == 'tiers':
                sched = rule['tiers'][pay['name']]
                bands = sched['bands']
                meas = sched['measure']
                if sched['mode'] == 'graduated':
                    before = cb if meas == 'customer_spend' else rb
                    com, tier, rate, exact = graduated(bands, before, basis)
                    if not exact:
                        inexact = 'a band of graduated tier %s' % pay['name']
                    row['why'].append('graduated %s before %s, basis %s (%s)' % (meas, before, basis, DOC['tier_grad']))
                else:
                    tot = {'customer_spend': cust_spend.get(c_id, ZERO), 'reseller_spend': res_spend,
                           'reseller_volume': D(res_volume)}[meas]
                    tier = band_of(bands, tot, opt('below_zero'))
                    if tier is None:
                        com, rate = ZERO, None
                        if opt('below_zero') == 'no_tier':
                            inexact = 'no_tier'
                    else:
                        rate = CTX.divide(dec(bands[tier - 1]['rate']), D(100))
                        com = mul(basis, rate)
                    row['why'].append('all-units %s total %s -> tier %s (%s)' % (
                        meas, tot, tier, DOC['tier_vol'] if meas == 'reseller_volume' else DOC['tier_all']))
            else:
                raise ValueError(t)
            if t in ('percent', 'tiers') and inexact is None and rate is not None and not held16(com):
                inexact = 'basis %s x rate %s' % (basis, rate)
            if inexact == 'no_tier':
                # no band holds the total (reading no_tier, engine version 2): the
                # clause matched, the line earns nothing, no line limit (F9)
                row['why'].append('all-units %s total %s is in no band: earns nothing, no line limits (F9)' % (
                    sched['measure'], tot))
                row.update(unrounded=ZERO, clause=clause_no, tier=None, rate=None, clause_text=cl['text'])
                self.lineage[(rid, ln['line_key'])] = dict(row, _rule=rule, _clause=cl, _ver=v, _period=period)
                continue
            if inexact:
                # rules.md §8: basis x rate that cannot be held at 16 decimals is
                # never rounded: the line earns nothing, is valued by no clause
                # (before any limit), opens a validation exception naming the
                # precision and blocks the run (settlement.md nothing guessed)
                row['why'].append('%s has more than 16 decimals: earns nothing, validation exception (%s)' % (inexact, DOC['precision']))
                row.update(unrounded=ZERO, clause=None, tier=None, rate=None, refused=True)
                blocked = True
                self.lineage[(rid, ln['line_key'])] = dict(row, _rule=rule, _clause=None, _ver=v, _period=period)
                continue
            com = self.line_limits(rule, cl, basis, com, row)
            # period caps, line key order, consumed only by positive commission
            if com > 0:
                for scope, todate, cap_key, doc in (('customer', cust_todate.get(c_id, ZERO), 'cap_customer', 'cust_cap'),
                                                   ('reseller', res_todate, 'cap_reseller', 'res_cap')):
                    cap = dec(rule.get(cap_key))
                    if cap is not None:
                        room = max(CTX.subtract(cap, todate), ZERO)
                        if com > room:
                            com = room
                            row['why'].append('%s cap %s, to date %s (%s)' % (scope, cap, todate, DOC[doc]))
                cust_todate[c_id] = add(cust_todate.get(c_id, ZERO), com)
                res_todate = add(res_todate, com)
            elif opt('cap_todate') == 'net':
                cust_todate[c_id] = add(cust_todate.get(c_id, ZERO), com)
                res_todate = add(res_todate, com)
            row.update(unrounded=com, clause=clause_no, tier=tier, rate=rate, clause_text=cl['text'])
            self.lineage[(rid, ln['line_key'])] = dict(row, _rule=rule, _clause=cl, _ver=v, _period=period)

        # pass 2: refund reversals
        for ln, orig, age, deferred in refunds:
            cust = self.customers.get(ln.get('customer_id'), {})
            why = []
            row = {'line_key': ln['line_key'], 'kind': 'r', 'customer_id': ln.get('customer_id'),
                   'revision': ln['revision'], 'why': why, 'dc': set(), 'ref_contains': ln['original_line_key']}
            rows.append(row)
            why.append('refund of %s, %s days after it%s (%s)' % (
                ln['original_line_key'], age, ', deferred from %s' % pprev if deferred else '', DOC['refund_window']))
            o = self.lineage.get((rid, ln['original_line_key']))
            if o is not None and o['_period'] > period:
                o = None      # settled in a later period: not yet settled when this period is
            if o is None:
                why.append('original not settled: unlinked (%s)' % DOC['refund'])
                row.update(unrounded=ZERO)
                row['dc'] |= {'clause', 'tier', 'rate', 'basis', 'rule_version', 'fx_rate_id', 'ref'}
                blocked = True
                continue
            ver = o['_ver']
            rule = ver['rule']
            brule = rule
            if opt('refund_basis_version') == 'refund_date':
                vd = date_of(ln['charge_period_start']) if opt('version_date') == 'charge' else self.line_date(ln, ag)
                bv = self.version_on(r, ag, vd)
                brule = bv['rule'] if bv else rule
            fxp = period if (not deferred or opt('deferred_fx') == 'settling_period') else pprev
            basis, fxid = self.convert(self.basis_amount(brule, ln), ln, ag, fxp, why)
            row.update(rule_version=o['rule_version'], clause=o.get('clause'), tier=o.get('tier'), clause_text=o.get('clause_text'),
                       rate=o.get('rate'), fx_rate_id=fxid)
            # what the model does not compare on the original (e.g. the clause of a line that had no
            # FX rate) it does not compare on the reversal that copies it either
            row['dc'] |= o['dc'] & {'clause', 'tier', 'rate'}
            if basis is None:
                row.update(unrounded=ZERO)
                row['dc'] |= {'basis'}
                blocked = True
                continue
            row['basis'] = basis
            if o.get('rate') is not None and 'rate' not in o['dc']:
                com = mul(basis, o['rate'])
                why.append('basis %s x original rate %s (%s)' % (basis, o['rate'], DOC['refund']))
                if not held16(com):
                    # rules.md §8: "the same holds for ... a refund reversed at its original's rate"
                    why.append('has more than 16 decimals: reverses nothing, validation exception (%s)' % DOC['precision'])
                    row.update(unrounded=ZERO, refused=True)
                    blocked = True
                    continue
            elif o.get('rate') is None and o.get('clause') is not None and o['_clause']['pay']['type'] != 'tiers':
                com = -o['unrounded']
                why.append('fixed amount %s reversed whole (%s)' % (o['unrounded'], DOC['refund']))
            elif o.get('clause') is None:
                com = ZERO
                why.append('original earned nothing (%s)' % DOC['refund'])
            else:
                # graduated original across bands: no single rate; the docs do
                # not say; the model reverses the original's effective rate.
                com = mul(basis, CTX.divide(o['unrounded'], o['basis'])) if o['basis'] else ZERO
                row['dc'] |= {'unrounded'}
                why.append('original spans tier bands; rate undefined by the docs')
            if o['_clause'] is not None and opt('refund_line_limits') == 'yes':
                com = self.line_limits(rule, o['_clause'], basis, com, row)
            row['unrounded'] = com

        if self.locked_lineage and self.corrections(rid, period, ag, rows):
            blocked = True
        for adj in self.adjustments:
            if adj['reseller_id'] == rid and adj['period'] == period:
                rows.append({'line_key': 'exception:%s' % adj.get('exception_id', '?'), 'kind': 'a', 'customer_id': None,
                             'unrounded': dec(adj['amount']), 'adj': True,
                             'why': ['approved adjustment %s (finance-guide.md §4: a settlement line of kind a)' % adj['amount']],
                             'dc': {'revision', 'rule_version', 'clause', 'tier', 'basis', 'rate', 'fx_rate_id', 'ref'}})

        # period floors: top-ups (kind f)
        prd = opt('period_rule_date')
        if prd == 'previous_period':
            pf, _ = period_bounds(pprev)
            pv = self.version_on(r, ag, pf) or self.version_on(r, ag, first)
        elif prd == 'previous_last_day':
            pv = self.version_on(r, ag, first - dt.timedelta(days=1)) or self.version_on(r, ag, first)
        elif prd == 'first_version':
            pv = min((v for v in r['rule_versions'] if v['agreement_id'] == ag['id']), key=lambda v: v['version'], default=None)
        else:
            pv = self.version_on(r, ag, last if prd == 'last_day' else first)
        prule = pv['rule'] if pv else {}
        fl_c = dec(prule.get('floor_customer'))
        if fl_c is not None:
            per = {}
            qualifies = set()
            mode = opt('floor_customers')
            for row in rows:
                if opt('floor_base') == 'charges' and row['kind'] != 'c':
                    continue
                per[row['customer_id']] = add(per.get(row['customer_id'], ZERO), row['unrounded'])
                if mode == 'any_line' or (mode == 'nonzero_commission' and row['unrounded'] != 0):
                    qualifies.add(row['customer_id'])
            if mode == 'positive_total':
                qualifies = {c for c, t in per.items() if t > 0}
            if mode == 'nonzero_basis':
                for ln in charges:
                    it = info[ln['line_key']]
                    if it.get('eligible') and it.get('basis'):
                        qualifies.add(ln.get('customer_id'))
            for c_id in sorted(k for k in per if k is not None and k in qualifies):
                if per[c_id] < fl_c:
                    rows.append({'line_key': 'floor:customer:%d' % c_id, 'kind': 'f', 'customer_id': c_id, 'unrounded': CTX.subtract(fl_c, per[c_id]),
                                 'why': ['customer %d total %s below floor %s (%s)' % (c_id, per[c_id], fl_c, DOC['cust_floor'])],
                                 'dc': {'revision', 'rule_version', 'clause', 'tier', 'basis', 'rate', 'fx_rate_id', 'ref'}})
        fl_r = dec(prule.get('floor_reseller'))
        if fl_r is not None:
            tot = ZERO
            for row in rows:
                if opt('floor_base') == 'charges' and row['kind'] not in 'cf':
                    continue
                tot = add(tot, row['unrounded'])
            mode = opt('floor_customers')
            if mode == 'nonzero_basis':
                qual = any(info[ln['line_key']].get('eligible') and info[ln['line_key']].get('basis') for ln in charges)
            elif mode == 'positive_total':
                qual = tot > 0
            elif mode == 'nonzero_commission':
                qual = any(row['unrounded'] != 0 for row in rows)
            else:
                qual = bool(rows)
            if tot < fl_r and qual:
                rows.append({'line_key': 'floor:reseller', 'kind': 'f', 'customer_id': None, 'unrounded': CTX.subtract(fl_r, tot),
                             'why': ['reseller total %s below floor %s (%s)' % (tot, fl_r, DOC['res_floor'])],
                             'dc': {'revision', 'rule_version', 'clause', 'tier', 'basis', 'rate', 'fx_rate_id', 'ref'}})

        # rounding: total once; lines floored, residual units by largest remainder
        s = ZERO
        for row in rows:
            s = add(s, row['unrounded'])
        total = round_money(s, minor, ag['rounding'])
        unit = D(1).scaleb(-minor)
        fsum = ZERO
        for row in rows:
            row['rounded'] = floor_money(row['unrounded'], minor)
            row['rem'] = CTX.subtract(row['unrounded'], row['rounded'])
            fsum = add(fsum, row['rounded'])
        n = int(CTX.divide(CTX.subtract(total, fsum), unit))
        assert 0 <= n <= len(rows), (n, len(rows))
        if opt('tie_order') == 'key':
            order = sorted(range(len(rows)), key=lambda i: (-rows[i]['rem'], rows[i]['line_key'], rows[i]['kind']))
        else:
            # the period's bill lines (charges and refund reversals) in line key order, then the
            # corrections, adjustments and floor top-ups in the order they are made
            late = lambda i: rows[i]['kind'] in 'xaf'
            order = sorted(range(len(rows)), key=lambda i: (-rows[i]['rem'], late(i), '' if late(i) else rows[i]['line_key'], i))
        for i in order[:n]:
            rows[i]['rounded'] = add(rows[i]['rounded'], unit)
            rows[i]['why'].append('receives a residual unit (%s)' % DOC['rounding'])
        for row in rows:
            if any(r2['kind'] == 'f' for r2 in rows):
                # f rows have keys the docs do not name: allocation ties with them are unspecified
                pass

        # statement
        def ksum(kinds):
            t = ZERO
            for row in rows:
                if row['kind'] in kinds:
                    t = add(t, row['rounded'])
            return t
        prev = self.results.get((rid, pprev))
        cf_in = prev['statement']['carry_forward_out'] if prev else ZERO
        bal = add(total, cf_in)
        minimum = dec(ag.get('minimum_payout')) or ZERO
        if bal < minimum or bal < 0:
            cf_out, net = bal, ZERO
        else:
            cf_out, net = ZERO, bal
        gross = ZERO
        commissionable = ZERO
        for ln in charges:
            it = info[ln['line_key']]
            g, _ = self.convert(dec(ln.get('billed_cost')), ln, ag, period, [])
            if g is not None:
                gross = add(gross, g)
            if it.get('eligible') and it.get('basis') is not None:
                commissionable = add(commissionable, it['basis'])
        gross = round_money(gross, minor, ag['rounding'])
        commissionable = round_money(commissionable, minor, ag['rounding'])
        f_in = opt('f_in')
        st = {
            'lines': D(len(rows)),
            'commission': ksum('cf' if f_in == 'commission' else 'c'),
            'refunds': ksum('r'),
            'corrections': ksum('x'),
            'adjustments': ksum('af' if f_in == 'adjustments' else 'a'),
            'total': total,
            'carry_forward_in': cf_in,
            'carry_forward_out': cf_out,
            'net_payout': net,
            'gross_charges': gross,
            'commissionable': commissionable,
        }
        res = {'rows': rows, 'statement': st, 'blocked': blocked, 'currency': cur_ccy}
        self.results[(rid, period)] = res
        return res

    def line_limits(self, rule, cl, basis, com, row):
        cap = dec(cl.get('cap')) if cl.get('cap') is not None else dec(rule.get('cap_line'))
        flo = dec(cl.get('floor')) if cl.get('floor') is not None else dec(rule.get('floor_line'))
        if flo is not None and basis != 0 and abs(com) < flo:
            if opt('floor_sign') == 'commission':
                com = D(-1 if com < 0 else 1) * flo
            else:
                com = D(sign(basis)) * flo
            row['why'].append('line floor %s (%s)' % (flo, DOC['line_floor']))
        if cap is not None and abs(com) > cap:
            com = D(sign(com)) * cap
            row['why'].append('line cap %s (%s)' % (cap, DOC['line_cap']))
        return com

    def run_all(self, phase=1, locked=(), adjustments=()):
        """Phase 1: settle every period in order.  Phase 2 (when the scenario
        has one): the runs in `locked` are locked, the phase-2 lines (late
        revisions) arrive and the scenario's phase-2 periods are settled again;
        a locked period never changes (settlement.md run states)."""
        for p in self.sc['settle_order']:
            for rid in sorted(self.resellers):
                self.settle(rid, p)
        if phase >= 2 and self.sc.get('phase2'):
            self.phase = 2
            self.locked = set(locked)
            for rid, p in self.locked:
                res = self.results.get((rid, p))
                if res:
                    self.locked_lineage[(rid, p)] = {
                        row['line_key']: self.lineage[(rid, row['line_key'])] for row in res['rows']
                        if row['kind'] == 'c' and (rid, row['line_key']) in self.lineage}
            self.load_lines(2)
            self.adjustments = list(adjustments)
            for p in self.sc['phase2']['settle_order']:
                for rid in sorted(self.resellers):
                    if (rid, p) not in self.locked:
                        self.settle(rid, p)
        return self.results

    def corrections(self, rid, period, ag, rows):
        """Correction lines (kind x): a bill line of a locked period revised after
        the lock, in the first open period after it, at the rate the original
        earned, for the difference between what the new revision earns and what
        was settled (settlement.md corrections).  True when a correction
        cannot be held at 16 decimals: it corrects by 0, and a validation
        exception blocks the run (settlement.md corrections, rules.md §8)."""
        refused = False
        for (lrid, lp), lineage in sorted(self.locked_lineage.items()):
            if lrid != rid:
                continue
            nxt = lp
            while True:
                nxt = period_of(period_bounds(nxt)[1] + dt.timedelta(days=1))
                if (rid, nxt) not in self.locked:
                    break
            if nxt != period:
                continue
            for key, o in sorted(lineage.items()):
                ln = self.lines.get((rid, key))
                if ln is None or ln['revision'] <= o['revision']:
                    continue
                why = ['revision %d of a line of locked period %s (settled revision %d) (%s)' % (
                    ln['revision'], lp, o['revision'], DOC['correction'])]
                row = {'line_key': key, 'kind': 'x', 'customer_id': ln.get('customer_id'), 'revision': ln['revision'],
                       'rule_version': o.get('rule_version'), 'clause': o.get('clause'), 'tier': o.get('tier'),
                       'clause_text': o.get('clause_text'), 'rate': o.get('rate'), 'why': why,
                       'dc': {'basis', 'fx_rate_id'} | (o['dc'] & {'clause', 'tier', 'rate'})}
                rows.append(row)
                rule = o['_rule']
                if o.get('_clause') is None or o.get('basis') is None:
                    row['unrounded'] = ZERO
                    row['dc'] |= {'unrounded'}
                    why.append('the original earned nothing; what a correction of it is, the docs do not say')
                    continue
                amount = self.basis_amount(rule, ln)
                if o.get('fx_rate_id'):
                    f = [x for x in self.fx if x['id'] == o['fx_rate_id']][0]
                    nb = mul(amount, dec(f['rate'])).quantize(D('1e-8'), rounding=ROUND_HALF_EVEN, context=CTX)
                    why.append("converted at the original's FX rate %s" % f['rate'])
                else:
                    nb = amount
                if o.get('rate') is not None and 'rate' not in o['dc']:
                    earn = mul(nb, o['rate'])
                    if not held16(earn):
                        # rules.md §8 / settlement.md corrections: not corrected -- a correction
                        # line of 0 (the new revision's basis, the original's rate), a
                        # validation exception naming the precision, the run blocked
                        why.append('%s x original rate %s has more than 16 decimals: not corrected, validation exception (%s)'
                                   % (nb, o['rate'], DOC['precision']))
                        row.update(unrounded=ZERO, refused=True)
                        refused = True
                        continue
                    row['unrounded'] = CTX.subtract(earn, o['unrounded'])
                    why.append('%s x original rate %s - settled %s' % (nb, o['rate'], o['unrounded']))
                elif o['_clause']['pay']['type'] in ('per_line', 'per_month', 'prorated') and opt('correction_fixed') == 'reverse_whole':
                    row['unrounded'] = -o['unrounded']
                    why.append('fixed amount reversed whole')
                elif o['_clause']['pay']['type'] in ('per_line', 'per_month', 'prorated'):
                    # a fixed amount: the new revision earns it with the sign of its basis (0 for a zero basis)
                    new_earn = D(sign(nb)) * abs(o['unrounded'])
                    row['unrounded'] = CTX.subtract(new_earn, o['unrounded'])
                    why.append('fixed amount: the new revision earns %s - settled %s' % (new_earn, o['unrounded']))
                else:
                    row['unrounded'] = ZERO
                    row['dc'] |= {'unrounded'}
                    why.append('fixed amount or tiered original: what the new revision earns is not defined by the docs')
        return refused


# ---------------------------------------------------------------- compare

ROW_FIELDS = ('revision', 'rule_version', 'clause', 'tier', 'basis', 'rate', 'fx_rate_id', 'unrounded', 'rounded')
INT_FIELDS = {'revision', 'rule_version', 'clause', 'tier', 'fx_rate_id'}
ST_FIELDS = ('lines', 'commission', 'refunds', 'corrections', 'adjustments', 'total',
             'carry_forward_in', 'carry_forward_out', 'net_payout', 'gross_charges', 'commissionable')
# statement columns whose definition the docs do not give
ST_UNSPECIFIED = {'gross_charges', 'commissionable'}


def norm(field, v):
    if v is None or v == '':
        return None
    if field in INT_FIELDS:
        return int(v)
    return D(str(v))


def fmt(v):
    if v is None:
        return 'NULL'
    if isinstance(v, Decimal):
        return format(v.normalize(CTX), 'f') if v != 0 else '0'
    return str(v)


def field_doc(field, row):
    why = ' | '.join(row.get('why', []))
    return {'clause': DOC['clause'], 'tier': DOC['tier_all'], 'rate': DOC['pct'], 'basis': DOC['basis'] + '; ' + DOC['fx'],
            'fx_rate_id': DOC['fx'], 'revision': DOC['revision'], 'rule_version': DOC['version'],
            'rounded': DOC['rounding']}.get(field, 'see derivation'), why


def f_customer(r):
    """The customer of an engine floor top-up row: its customer_id, else the
    number after 'customer:' in its line key (the docs do not name the key)."""
    if r.get('customer_id'):
        return int(r['customer_id'])
    m = re.search(r'customer:(\d+)', r['line_key'] or '')
    return int(m.group(1)) if m else None


def clause_tokens(text):
    """A clause's text as comparable tokens: numbers by value, quotes and case of keywords dropped."""
    out = []
    for tok in re.findall(r'"(?:[^"\\]|\\.)*"|[^\s,]+', (text or '').lower()):
        if tok.startswith('"'):
            out.append(tok[1:-1].replace('\\"', '"').replace('\\\\', '\\'))
            continue
        m = re.fullmatch(r'(\d+(?:\.\d+)?)(%?)', tok)
        out.append(str(D(m.group(1)).normalize(CTX)) + m.group(2) if m else tok)
    return out


def compare(model, lineage_csv, statement_csv, out=sys.stdout, seed=None):
    eng_rows = {}
    with open(lineage_csv, newline='') as f:
        for r in csv.DictReader(f):
            eng_rows.setdefault((int(r['reseller_id']), r['period']), []).append(r)
    eng_st = {}
    with open(statement_csv, newline='') as f:
        for r in csv.DictReader(f):
            eng_st[(int(r['reseller_id']), r['period'])] = r
    refused = {}
    exc_csv = lineage_csv.rsplit('/', 1)[0] + '/exceptions.csv'
    try:
        with open(exc_csv, newline='') as f:
            for r in csv.DictReader(f):
                if r['kind'] == 'validation' and r['scope_key'].startswith('line:'):
                    refused[(int(r['reseller_id']), r['scope_key'][5:])] = r['payload']
    except FileNotFoundError:
        pass
    problems = []
    compared = 0
    tie_orders = set()

    def report(rid, period, what, field, mv, ev, doc, detail=''):
        key = (rid, period, 'rounding allocation' if what.endswith(' lines') else what, field)
        problems.append((key, 'DISAGREE seed=%s reseller=%s period=%s %s %s: model=%s engine=%s\n    rule: %s%s' % (
            seed, rid, period, what, field, fmt(mv), fmt(ev), doc, ('\n    model derivation: ' + detail) if detail else '')))

    for (rid, period), res in sorted(model.results.items()):
        erows = eng_rows.get((rid, period), [])
        st = eng_st.get((rid, period))
        if st is None:
            report(rid, period, 'run', 'statement', 'present', 'missing', DOC['statement'])
            continue
        ekey = {}
        ef = []
        rounded_diffs = []
        before_run = len(problems)
        ea = []
        for r in erows:
            if r['kind'] == 'a':
                ea.append(r)
            elif r['kind'] == 'f':
                ef.append(r)
            else:
                ekey[(r['line_key'], r['kind'])] = r
        mkeys = set()
        for row in res['rows']:
            compared += 1
            if row['kind'] == 'a':
                match = [r for r in ea if norm('unrounded', r['unrounded']) == row['unrounded']]
                if not match:
                    report(rid, period, 'adjustment %s' % fmt(row['unrounded']), 'row', 'present', 'missing', DOC['adjustment'])
                    continue
                e = match[0]
                ea.remove(e)
                what = 'a-line %s' % e['line_key']
            elif row['kind'] == 'f':
                match = [r for r in ef if f_customer(r) == row['customer_id']]
                if not match:
                    report(rid, period, 'floor top-up customer=%s' % row['customer_id'], 'row', fmt(row['unrounded']), 'missing',
                           DOC['cust_floor' if row['customer_id'] else 'res_floor'], ' | '.join(row['why']))
                    continue
                e = match[0]
                ef.remove(e)
                what = 'f-line %s (customer %s)' % (e['line_key'], row['customer_id'])
            else:
                k = (row['line_key'], row['kind'])
                mkeys.add(k)
                e = ekey.get(k)
                what = 'line %s kind %s' % k
                if e is None:
                    report(rid, period, what, 'row', 'present (unrounded %s)' % fmt(row['unrounded']), 'missing',
                           DOC['period'] if row['kind'] == 'c' else DOC['refund_window'], ' | '.join(row['why']))
                    continue
            if row.get('refused'):
                # the model refuses the line (rules.md §8): the engine must say why, naming the precision
                payload = refused.get((rid, row['line_key']))
                if payload is None or 'precision' not in payload:
                    report(rid, period, what, 'exception', 'validation exception naming the precision',
                           payload[:160] if payload else 'none', DOC['precision'], ' | '.join(row['why']))
            elif row['kind'] == 'c' and (rid, row['line_key']) in refused and row.get('clause') is not None and (
                    norm('clause', e['clause']) is None):
                # the engine refused to value a line the model values (valued by no clause, a validation
                # exception of the line; one of an earlier revision may still be open): one report, not one per field
                report(rid, period, what, 'valued', '%s (rounded %s)' % (fmt(row['unrounded']), fmt(row['rounded'])),
                       'earns nothing: validation exception ' + refused[(rid, row['line_key'])][:160],
                       DOC['precision'] + ' (the model finds basis x rate exact at 16 decimals)',
                       ' | '.join(row['why']))
                continue
            for fld in ROW_FIELDS:
                if fld in row.get('dc', ()) or (fld not in row and fld != 'rounded'):
                    continue
                if fld == 'rounded' and 'unrounded' in row.get('dc', ()):
                    continue
                mv = row.get(fld)
                ev = norm(fld, e.get(fld))
                if fld in INT_FIELDS:
                    mv = None if mv is None else int(mv)
                if fld == 'clause' and mv is not None and ev is not None and mv != ev:
                    # equally specific clauses: the docs do not fix their numbering; compare the clause itself
                    if clause_tokens(row.get('clause_text')) == clause_tokens(e.get('clause_text')):
                        tie_orders.add((rid, row.get('rule_version'), mv, ev, row.get('clause_text')))
                        continue
                    mv = '%s "%s"' % (mv, row.get('clause_text'))
                    ev = '%s "%s"' % (ev, e.get('clause_text'))
                if mv != ev:
                    doc, why = field_doc(fld, row)
                    if fld == 'rounded':
                        rounded_diffs.append((what, mv, ev, doc, why))
                    else:
                        report(rid, period, what, fld, mv, ev, doc, why)
            if row.get('ref_contains') and 'ref' not in row.get('dc', ()):
                if row['ref_contains'] not in (e.get('ref') or ''):
                    report(rid, period, what, 'ref', 'mentions ' + row['ref_contains'], e.get('ref') or None, DOC['refund'])
        for k, e in sorted(ekey.items()):
            if k not in mkeys:
                report(rid, period, 'line %s kind %s' % k, 'row', 'absent', 'present (unrounded %s)' % e['unrounded'],
                       DOC['period'] if k[1] == 'c' else DOC['refund_window'])
        for e in ea:
            report(rid, period, 'a-line %s' % e['line_key'], 'row', 'absent', 'present (unrounded %s)' % e['unrounded'], DOC['adjustment'])
        for e in ef:
            report(rid, period, 'f-line %s customer %s' % (e['line_key'], e['customer_id']), 'row', 'absent',
                   'present (unrounded %s)' % e['unrounded'], DOC['cust_floor'])
        eb = st.get('blocked') == 't'
        if eb != res['blocked']:
            report(rid, period, 'run', 'blocked', res['blocked'], eb,
                   'settlement.md nothing guessed: missing rule, FX rate, customer or unlinked refund block the run')
        if rounded_diffs:
            s_model = ZERO
            for row in res['rows']:
                s_model = add(s_model, row['unrounded'])
            s_eng = ZERO
            for r in erows:
                s_eng = add(s_eng, D(r['unrounded']))
            if len(problems) > before_run or s_model != s_eng:
                # the run's lines differ elsewhere: the residue allocation differs as a consequence
                report(rid, period, '%d lines' % len(rounded_diffs), 'rounded', 'allocation over the model\'s lines',
                       'allocation over the engine\'s lines', DOC['rounding'] + ' (a consequence of the other differences of this run)',
                       '; '.join('%s %s/%s' % (w.split()[1][-24:], fmt(m), fmt(e)) for w, m, e, _, _ in rounded_diffs[:6]))
            else:
                for what, mv, ev, doc, why in rounded_diffs:
                    report(rid, period, what, 'rounded', mv, ev, doc, why)
        for fld in ST_FIELDS:
            mv = res['statement'][fld]
            ev = D(st[fld])
            if mv != ev:
                doc = DOC['carry'] if 'carry' in fld or fld == 'net_payout' else (
                    DOC['rounding'] if fld == 'total' else DOC['statement'])
                if fld in ST_UNSPECIFIED:
                    doc = 'not defined by the docs (model: Σ converted billed_cost of charge lines / Σ basis of eligible charge lines, rounded to the minor unit)'
                report(rid, period, 'statement', fld, mv, ev, doc)
        # properties of the engine's own output
        s = ZERO
        for r in erows:
            s = add(s, D(r['rounded']))
        if s != D(st['total']):
            report(rid, period, 'statement', 'Σ lineage rounded = total', s, D(st['total']), DOC['statement'])
    notes = []
    for rid, ver, mv, ev, text in sorted(tie_orders, key=str):
        notes.append('NOTE seed=%s reseller=%s rule version %s: clause "%s" is number %s in the engine, %s in the model '
                     '(equally specific clauses: the docs do not say how they are numbered)' % (seed, rid, ver, text, ev, mv))
    extra = set(eng_st) - set(model.results)
    for rid, period in sorted(extra):
        report(rid, period, 'run', 'statement', 'absent', 'present', DOC['statement'])
    return compared, problems, notes


# Readings under which the engine was seen to settle, each a finding of the
# differential test (README.md): a disagreement that disappears when the
# model takes one of these readings is attributed to that finding.
KNOWN = [
    ('K1 settle_period ignores bill-line tags in clause matching (known defect; rules.md §3 tag condition)',
     {'tags': 'customer'}),
    ('F1 period floors (per customer / per reseller) are taken from the rule version in force on the first day of '
     'the previous period, not from the version in force in the period (settlement.md floors; rules.md §6)',
     {'period_rule_date': 'previous_period'}),
    ('F2 a refund\'s basis (billed_cost/list_cost/amount_paid) is taken from the rule version in force on the '
     'refund\'s date, not the original\'s (rules.md §7 "evaluate the refund with the rule version that was in '
     'force for the original charge")', {'refund_basis_version': 'refund_date'}),
    ('F8 residual rounding units tied between lines of different kinds or between floor top-ups do not go in line '
     'key order (floor:customer:22 before floor:customer:9, a charge before an earlier-keyed correction): the engine '
     'gives them to the charges and reversals in line key order, then to corrections, adjustments and top-ups in the '
     'order they are made (settlement.md rounding "ties: line key order")', {'tie_order': 'generated'}),
    ('F10 a period cap (per customer / per reseller) counts negative commission (an eligible credit) in the '
     'commission to date, so a credit earlier in line key order gives room back and the capped total depends on '
     'line order (rules.md §6 "period caps are consumed only by positive commission")', {'cap_todate': 'net'}),
    ('F11 a per-line floor on a line of negative basis whose commission before limits is 0 (pay 0%, pay 0 per line) '
     'is +floor: a credit earns positive commission (rules.md §6: limits apply to the magnitude, a negative basis '
     'is limited like a charge; -0.1 is floored to -2, 0 to +2)', {'floor_sign': 'commission'}),
    ('F9 an all-units tier total below 0 (eligible credits outweigh the charges) is in no band: the clause '
     'matches, the line earns nothing and no line cap or floor applies, while the part of a graduated line below 0 '
     'is taken at the first band\'s rate (rules.md §5 "A measure below 0": the first band extends below 0 in both '
     'modes)', {'below_zero': 'no_tier'}),
    ('F4 a correction of a line that earned a fixed amount (per line / per month / prorated) reverses the whole '
     'settled amount although the new revision still earns it (settlement.md corrections: "the difference between '
     'what the new revision earns and what was settled")', {'correction_fixed': 'reverse_whole'}),
]


# What a seed must reach between them for `make test` (test/process/diff_model.sh):
# each feature the model derives, named by what its derivation says.
FEATURES = {
    'clause by tag': lambda row: 'tag condition' in row['w'],
    'clause not matched': lambda row: 'no clause matches' in row['w'],
    'not eligible': lambda row: 'not eligible' in row['w'],
    'percent': lambda row: '% of basis' in row['w'],
    'per line': lambda row: ' per line (' in row['w'],
    'per month': lambda row: ' per month (' in row['w'],
    'prorated': lambda row: 'days (rules.md §4 prorated' in row['w'],
    'all-units customer spend': lambda row: 'all-units customer_spend' in row['w'],
    'all-units reseller spend': lambda row: 'all-units reseller_spend' in row['w'],
    'all-units reseller volume': lambda row: 'all-units reseller_volume' in row['w'],
    'graduated customer spend': lambda row: 'graduated customer_spend' in row['w'],
    'graduated reseller spend': lambda row: 'graduated reseller_spend' in row['w'],
    'line cap': lambda row: 'line cap' in row['w'],
    'line floor': lambda row: 'line floor' in row['w'],
    'customer cap': lambda row: 'customer cap' in row['w'],
    'reseller cap': lambda row: 'reseller cap' in row['w'],
    'customer floor top-up': lambda row: row['kind'] == 'f' and row['customer_id'] is not None,
    'reseller floor top-up': lambda row: row['kind'] == 'f' and row['customer_id'] is None,
    'FX conversion': lambda row: row['kind'] == 'c' and 'FX ' in row['w'],
    'missing FX rate': lambda row: 'no FX rate' in row['w'],
    'refund in its period': lambda row: row['kind'] == 'r' and 'deferred' not in row['w'] and 'original rate' in row['w'],
    'refund deferred': lambda row: row['kind'] == 'r' and 'deferred from' in row['w'],
    'refund of a fixed amount': lambda row: 'reversed whole' in row['w'] and row['kind'] == 'r',
    'unlinked refund': lambda row: 'unlinked' in row['w'],
    'line without a customer': lambda row: 'line without a customer' in row['w'],
    'correction': lambda row: row['kind'] == 'x' and 'original rate' in row['w'],
    'correction of a fixed amount': lambda row: row['kind'] == 'x' and 'fixed amount' in row['w'],
    'approved adjustment': lambda row: row['kind'] == 'a',
    'residual unit': lambda row: 'residual unit' in row['w'],
    'refused charge (16 decimals)': lambda row: row['kind'] == 'c' and row.get('refused'),
    'refused graduated band (16 decimals)': lambda row: row.get('refused') and 'graduated tier' in row['w'],
    'refused reversal (16 decimals)': lambda row: row['kind'] == 'r' and row.get('refused'),
    'refused correction (16 decimals)': lambda row: row['kind'] == 'x' and row.get('refused'),
}


def coverage(m):
    """The features a settled model reached (FEATURES, plus run-level ones)."""
    got = set()
    for (rid, period), res in m.results.items():
        for row in res['rows']:
            r2 = dict(row, w=' | '.join(row.get('why', [])))
            got |= {name for name, f in FEATURES.items() if f(r2)}
        st = res['statement']
        if st['carry_forward_out'] != 0:
            got.add('carry-forward')
        if st['net_payout'] != 0 and st['carry_forward_in'] != 0:
            got.add('carry-forward paid out')
        if res['blocked']:
            got.add('blocked run')
        got.add('minor unit %d' % m.minor[res['currency']])
        ag = m.agreement_for(m.resellers[rid], period)
        got.add('rounding %s' % ag['rounding'])
        got.add('date basis %s' % ag['date_basis'])
        first, last = period_bounds(period)
        if any(first < dt.date.fromisoformat(v['effective_from']) <= last for v in m.resellers[rid]['rule_versions']):
            got.add('rule version changes mid-period')
    return got


ALL_FEATURES = sorted(set(FEATURES) | {'carry-forward', 'carry-forward paid out', 'blocked run', 'minor unit 0',
                                        'minor unit 2', 'minor unit 3', 'rounding half_even', 'rounding half_up',
                                        'rounding down', 'date basis service_month', 'date basis invoice_period',
                                        'rule version changes mid-period'})


def evaluate(sc, overrides, phase, locked, cdir, seed, adjustments=()):
    saved = dict(INTERPRETATIONS)
    INTERPRETATIONS.update(overrides)
    try:
        m = Model(json.loads(json.dumps(sc)))
        m.run_all(phase=phase, locked=locked, adjustments=adjustments)
        if cdir is None:
            return m, 0, [], []
        compared, problems, notes = compare(m, cdir + '/lineage.csv', cdir + '/statement.csv', seed=seed)
        return m, compared, problems, notes
    finally:
        INTERPRETATIONS.clear()
        INTERPRETATIONS.update(saved)


def pgtap(m, sc, load_sql, out):
    """A pgTAP regression test of phase 1: load the scenario, settle every
    period, assert every statement total and every lineage row the model
    expects (docs/README.md of test/diff: how a failing seed becomes a case)."""
    tests = []
    for (rid, period), res in sorted(m.results.items()):
        q = "(SELECT %%s FROM settle.statement st JOIN settle.run r USING (reseller_id, run_id) WHERE r.reseller_id = %d AND r.period = '%s' AND r.status <> 'superseded')" % (rid, period)
        for fld in ('total', 'net_payout', 'carry_forward_out'):
            tests.append("SELECT is(%s, %s::numeric, 'reseller %d %s statement %s');" % (q % fld, fmt(res['statement'][fld]), rid, period, fld))
        for row in sorted(res['rows'], key=lambda r: (r['line_key'], r['kind'])):
            if row['kind'] == 'a' or 'unrounded' in row.get('dc', ()):
                continue
            sel = ("(SELECT sl.%%s FROM settle.settlement_line sl JOIN settle.run r USING (reseller_id, run_id) "
                   "WHERE r.reseller_id = %d AND r.period = '%s' AND r.status <> 'superseded' AND sl.line_key = %s AND sl.kind = '%s')"
                   % (rid, period, "'" + row['line_key'].replace("'", "''") + "'", row['kind']))
            tests.append("SELECT is(%s, %s::numeric, %s);" % (sel % 'unrounded', fmt(row['unrounded']),
                         "'" + ('%s %s unrounded' % (row['line_key'], row['kind'])).replace("'", "''") + "'"))
            tests.append("SELECT is(%s, %s::numeric, %s);" % (sel % 'rounded', fmt(row['rounded']),
                         "'" + ('%s %s rounded' % (row['line_key'], row['kind'])).replace("'", "''") + "'"))
    body = [l for l in load_sql.splitlines() if not l.startswith('\\set')]
    with open(out, 'w') as f:
        f.write('-- generated by test/diff/model.py --pgtap from seed %s: expected values from the model (docs)\n' % sc.get('seed'))
        f.write('\\set ON_ERROR_STOP 1\nBEGIN;\nSELECT plan(%d);\n' % len(tests))
        f.write('\n'.join(body) + '\n')
        for p in sc['settle_order']:
            f.write("SELECT count(*) FROM settle.settle_period('%s');\n" % p)
        f.write('\n'.join(tests) + '\n')
        f.write('SELECT * FROM finish();\nROLLBACK;\n')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('scenario')
    ap.add_argument('--compare', metavar='DIR')
    ap.add_argument('--seed')
    ap.add_argument('--phase', type=int, default=2, help='1: state after the first settlement; 2: after locks and late revisions')
    ap.add_argument('--opt', action='append', default=[], help='interpretation name=value')
    ap.add_argument('--pgtap', metavar='FILE', help='write a pgTAP regression test of phase 1 (needs load.sql next to the scenario)')
    ap.add_argument('--no-explain', action='store_true', dest='no_explain', help='do not attribute disagreements to known findings')
    ap.add_argument('--coverage', metavar='DIR', help='print the features the scenario reaches (DIR: the seed\'s run.sh '
                    'directory, for its locks and adjustments; "-": lock the first period\'s unblocked runs, approve every adjustment)')
    a = ap.parse_args()
    for o in a.opt:
        k, v = o.split('=', 1)
        if k not in INTERPRETATIONS:
            sys.exit('unknown interpretation %s' % k)
        INTERPRETATIONS[k] = v
    with open(a.scenario) as f:
        sc = json.load(f)
    locked = set()
    src = a.compare or (a.coverage if a.coverage != '-' else None)
    if src and os.path.exists(os.path.join(src, 'locked.txt')):
        with open(os.path.join(src, 'locked.txt')) as f:
            for line in f:
                if line.strip():
                    rid, p = line.split('|')[:2]
                    locked.add((int(rid), p.strip()))
    adjustments = []
    if src and os.path.exists(os.path.join(src, 'adjustments.txt')):
        # the adjustments run.sh got proposed and approved: n|exception_id
        byn = {str(x['n']): x for x in (sc.get('phase2') or {}).get('adjustments', [])}
        with open(os.path.join(src, 'adjustments.txt')) as f:
            for line in f:
                if line.strip():
                    n, eid = line.strip().split('|')[:2]
                    adjustments.append(dict(byn[n], exception_id=eid))
    seed = a.seed or sc.get('seed')
    if a.pgtap:
        m, _, _, _ = evaluate(sc, {}, 1, set(), None, seed)
        with open(os.path.join(os.path.dirname(os.path.abspath(a.scenario)), 'load.sql')) as f:
            pgtap(m, sc, f.read(), a.pgtap)
        return
    if a.coverage:
        if a.coverage == '-' and sc.get('phase2'):
            m1, _, _, _ = evaluate(sc, {}, 1, set(), None, seed)
            locked = {k for k, res in m1.results.items() if k[1] == sc['settle_order'][0] and not res['blocked']}
            adjustments = [dict(x, exception_id='?') for x in sc['phase2'].get('adjustments', [])]
        m, _, _, _ = evaluate(sc, {}, a.phase, locked, None, seed, adjustments)
        for name in sorted(coverage(m)):
            print(name)
        return
    m, compared, problems, notes = evaluate(sc, {}, a.phase, locked, a.compare, seed, adjustments)
    if a.compare:
        # attribute disagreements to known findings: those that disappear under the engine's reading
        cause = {}
        if problems and not a.no_explain:
            base = {k for k, _ in problems}
            combined = {}
            gones = []
            for name, ov in KNOWN:
                combined.update(ov)
                _, _, alt, _ = evaluate(sc, ov, a.phase, locked, a.compare, seed, adjustments)
                gones.append((name, base - {k for k, _ in alt}))
            # the finding whose reading explains most of them first (a reading that changes many
            # lines can make a few residue allocations vanish by accident)
            for name, gone in sorted(gones, key=lambda x: -len(x[1])):
                for k in gone:
                    cause.setdefault(k, name.split()[0])
            _, _, alt, _ = evaluate(sc, combined, a.phase, locked, a.compare, seed, adjustments)
            for k in base - {k for k, _ in alt}:
                cause.setdefault(k, 'K*')
        for k, text in problems:
            print(text + ('\n    known: %s' % cause[k] if k in cause else '\n    UNEXPLAINED'))
        for n in notes:
            print(n)
        used = sorted({c for c in cause.values()})
        for name, _ in KNOWN:
            if name.split()[0] in used:
                print('  finding %s' % name)
        if 'K*' in used:
            print('  finding K* = only under the known findings together')
        groups = {}
        for k, _ in problems:
            g = (cause.get(k, 'UNEXPLAINED'), 'statement' if k[2] in ('statement', 'run') else 'line', k[3])
            groups[g] = groups.get(g, 0) + 1
        for (c, w, fld), n in sorted(groups.items(), key=lambda x: (x[0][0] != 'UNEXPLAINED', -x[1])):
            print('  summary: %5d x %s %s (%s)' % (n, w, fld, c))
        unexplained = sum(1 for k, _ in problems if k not in cause)
        print('seed %s: %d model lines compared over %d runs, %d disagreements (%d unexplained)' % (
            seed, compared, len(m.results), len(problems), unexplained))
        sys.exit(1 if problems else 0)
    for (rid, period), res in sorted(m.results.items()):
        print('reseller %d period %s currency %s%s' % (rid, period, res['currency'], ' (blocked)' if res['blocked'] else ''))
        for row in sorted(res['rows'], key=lambda r: (r['line_key'] or '', r['kind'])):
            print('  %-60s %s clause=%s tier=%s basis=%s rate=%s unrounded=%s rounded=%s' % (
                row['line_key'], row['kind'], row.get('clause'), row.get('tier'), fmt(row.get('basis')),
                fmt(row.get('rate')), fmt(row['unrounded']), fmt(row['rounded'])))
        print('  statement: ' + ', '.join('%s=%s' % (k, fmt(v)) for k, v in res['statement'].items()))


if __name__ == '__main__':
    main()
