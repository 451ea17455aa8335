#!/usr/bin/env python3
"""Mock Alibaba Cloud BSS OpenAPI endpoint for settle's ingestion tests.

Serves DescribeInstanceBill (Data.Items[], NextToken/MaxResults paging) and
QueryBillOverview (Data.Items.Item[]) over HTTPS with the real envelope and
its quirks, verifies every request's ACS3-HMAC-SHA256 signature with an
independent implementation (SignatureDoesNotMatch when wrong), and injects
faults chosen by the request path:

    https://127.0.0.1:PORT/m/<dataset>/<fault>/

dataset: small | demo (test/fixtures/ingest/<dataset>_items.json) | month-<N> (N generated
lines, seeded) | bench-<N> (same generator, ~1 KB items) | refund3 (one order, two refunds of
one instance) | dupes-<N> (N groups of items sharing a natural key: repeated, partial refunds,
adjustments, items differing in one field) | absurd (amounts settle cannot hold) | badutf8
(small with a non-UTF-8 byte in one ProductName) | members-<A>x<L> (a payer and A-1 member
accounts, L lines each: served per BillOwnerId, only the payer's own lines without it)
| daily-<L>x<P> (a month of P pages of L lines per bill owner, spread over its days: day d of
an M-day cycle has L x (P // M + (1 if d <= P % M else 0)) lines, a deterministic function of
the cycle, the owner (BillOwnerId, else the payers' own) and the day; with Granularity=DAILY
and BillingDate only that day's items, each with its BillingDate; MONTHLY: the whole month).
fault:   ok | e500x<k> | e503x<k> | throttlex<k> | e429x<k> | slowx<k> | resetx<k>
         (the first k requests on that path fail that way, then it recovers)
         | e503always | truncated | ctype | badtoken | repeat | revise | big | trickle
         | pace (30 ms per page: a slower provider) | midfailx<k> (the first k requests
         for a page after the first fail with 503) | drop (from the second pull of the
         month on, item 3 is gone) | droptrunc (the same, and pages after the first are truncated)
         | d<DD>revise | d<DD>drop | d<DD>droptrunc (daily-* datasets: the same, for day DD
         only, from the second pull of that day on; pulls are counted per day)
         | d<DD>dropslow (the same as d<DD>drop, and pages after the first wait 2 s)
         | limit<R>lat<ms> (either part alone too): the provider's flow control and
         round trip.  limit<R>: at most R requests per second per AccessKey, over every
         path that asks for a limit (a token bucket refilled at R per second that holds
         at most max(1, R/2) tokens: half a second of slack for requests that arrive
         bunched, as a gateway's would); a request beyond it fails with 400
         Throttling.User.  lat<ms>: every reply waits ms milliseconds.
Counters are per path, so each test uses its own path.

Control: GET /__stats/<path> -> {"requests": n, "throttled": t, "max_inflight": m} (m: most
requests of the path served at once); GET /__keystats -> {access key id: {"requests": n,
"throttled": t}} over the limited paths; GET /__expected/<dataset> ->
CSV account,product,lines,pretax,gross computed from the served items (Decimal);
GET /__expected_daily/<dataset>/<cycle>[/<owner>] -> CSV day,lines,pretax,gross of a
daily-* dataset's month as first served (before any d<DD> fault).

Also a signer for cross-checks:  bss_mock.py sign METHOD HOST QUERYJSON HEADERSJSON ID SECRET
"""
import base64
import hashlib
import hmac
import json
import os
import random
import re
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse
from decimal import Decimal, ROUND_HALF_EVEN, getcontext
import decimal
decimal.DefaultContext.prec = 200
getcontext().prec = 200
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, '..', 'fixtures', 'ingest')


# ---------------------------------------------------------------- signing
def pct(s):
    return urllib.parse.quote(s, safe='-_.~')


def acs3(method, host, query, headers, body, key_id, secret):
    """Independent ACS3-HMAC-SHA256: returns (authorization, canonical request)."""
    body_hash = hashlib.sha256(body).hexdigest()
    hs = {}
    for k, v in headers.items():
        lk = k.strip().lower()
        if lk in ('host', 'x-acs-content-sha256'):
            continue
        if lk == 'content-type' or lk.startswith('x-acs-'):
            hs[lk] = str(v).strip()
    hs['host'] = host.strip()
    hs['x-acs-content-sha256'] = body_hash
    names = sorted(hs)
    cq = '&'.join('%s=%s' % kv for kv in sorted((pct(k), pct(str(v))) for k, v in query.items()))
    canon = '\n'.join([method, '/', cq, ''.join('%s:%s\n' % (n, hs[n]) for n in names),
                       ';'.join(names), body_hash])
    sts = 'ACS3-HMAC-SHA256\n' + hashlib.sha256(canon.encode()).hexdigest()
    sig = hmac.new(secret.encode(), sts.encode(), hashlib.sha256).hexdigest()
    return ('ACS3-HMAC-SHA256 Credential=%s,SignedHeaders=%s,Signature=%s'
            % (key_id, ';'.join(names), sig), canon)


# ---------------------------------------------------------------- data
def jnum(d):
    return str(d)


def item_json(it):
    """Items are lists of (name, value); Decimal -> JSON number, str -> JSON string."""
    parts = []
    for k, v in it:
        if isinstance(v, Decimal):
            parts.append('"%s":%s' % (k, jnum(v)))
        elif v is None:
            parts.append('"%s":null' % k)
        else:
            parts.append('"%s":%s' % (k, json.dumps(v, ensure_ascii=False)))
    return '{' + ','.join(parts) + '}'


ACCOUNTS = ['1100000000000001', '1100000000000002', '1100000000000003',
            '1100000000000004', '1100000000000005', '1199999999999999']
PRODUCTS = [('ecs', '云服务器ECS', 'Elastic Compute Service'), ('rds', '云数据库RDS\t', 'ApsaraDB RDS'),
            ('oss', '对象存储OSS', 'Object Storage Service'), ('slb', 'Server Load Balancer\n', 'SLB'),
            ('cdn', 'CDN', 'CDN'), ('polardb', 'PolarDB', 'PolarDB'), ('sls', '日志服务', 'SLS')]
REGIONS = ['China (Hangzhou)\n', '杭州', 'Singapore\t', 'China (Shanghai)', '华北2（北京）']
Q4 = Decimal('0.0001')
Q2 = Decimal('0.01')


def gen_month(n, cycle='2026-10', seed=42, big=False):
    rnd = random.Random(seed)
    items = []
    orders = []
    for i in range(n):
        acct = ACCOUNTS[i % len(ACCOUNTS)]
        pc, pname, _ = PRODUCTS[(i // len(ACCOUNTS)) % len(PRODUCTS)]
        r = rnd.random()
        if r < 0.02 and orders:
            o = orders.pop()
            it = [(k, v) for k, v in o]
            d = dict(it)
            neg = {}
            for f in ('PretaxGrossAmount', 'InvoiceDiscount', 'DeductedByCoupons', 'PretaxAmount',
                      'PaymentAmount', 'CashAmount', 'AfterDiscountAmount'):
                neg[f] = -d[f]
            it = [(k, neg.get(k, v)) for k, v in it]
            it = [(k, 'Refund' if k == 'Item' else v) for k, v in it]
            items.append(it)
            continue
        if r < 0.03:
            kind, sub = 'Adjustment', 'PayAsYouGo'
        elif r < 0.15:
            kind, sub = 'SubscriptionOrder', 'Subscription'
        else:
            kind, sub = 'PayAsYouGoBill', 'PayAsYouGo'
        if rnd.random() < 0.03:
            gross = Decimal(0).quantize(Q4)
        else:
            gross = (Decimal(rnd.randint(1, 50_000_000)) * Q4)
        disc = (gross * Decimal(rnd.choice([0, 5, 10, 15])) / 100).quantize(Q2, ROUND_HALF_EVEN)
        coup = Decimal('0.00') if rnd.random() < 0.9 else min(Decimal('1.00'), (gross - disc).quantize(Q2))
        pretax = (gross - disc - coup).quantize(Q2, ROUND_HALF_EVEN)
        if pretax < 0:
            pretax = Decimal('0.00')
            coup = (gross - disc).quantize(Q2)
        inst = 'i-%s%07d' % (acct[-4:], i)
        day = 1 + i % 28
        it = [
            ('BillingDate', ''), ('InstanceConfig', 'CPU：%d核；内存：%dGB' % (2 ** (i % 4), 4 * 2 ** (i % 4))),
            ('InternetIP', '47.%d.%d.%d\t' % (i % 250, (i // 250) % 250, i % 7)),
            ('Item', kind), ('Tag', 'key:env value:%s; key:team value:t%d' % (rnd.choice(['prod', 'dev']), i % 9)),
            ('InstanceID', inst), ('Currency', 'CNY'), ('BillAccountName', 'acct%s@example.aliyunid.com' % acct[-2:]),
            ('DeductedByCashCoupons', Decimal('0.00')), ('SubscriptionType', sub), ('BizType', 'trusteeship'),
            ('InstanceSpec', 'ecs.g6.%s\t' % rnd.choice(['large', 'xlarge', '2xlarge'])),
            ('DeductedByCoupons', coup), ('BillingItem', '带宽' if i % 3 == 0 else 'Compute'),
            ('BillingItemCode', 'bw_%d' % (i % 5)), ('Region', REGIONS[i % len(REGIONS)]),
            ('OutstandingAmount', Decimal('0.00')), ('CostUnit', '未分配\t'), ('ListPriceUnit', '元/小时\n'),
            ('ResourceGroup', '默认资源组\t'), ('PipCode', pc), ('ServicePeriodUnit', '秒'),
            ('PretaxAmount', pretax), ('CommodityCode', pc + '_pre'), ('ProductName', pname), ('AdjustAmount', Decimal('0')),
            ('NickName', 'node-%d' % i), ('ProductDetail', pname + ' 按量付费'), ('Usage', '%d\t' % rnd.randint(1, 720)),
            ('IntranetIP', '10.%d.%d.%d' % (i % 200, (i // 200) % 250, i % 11)), ('OwnerID', acct),
            ('DeductedByPrepaidCard', Decimal('0.00')), ('UsageUnit', 'Hour'), ('BillAccountID', acct),
            ('PaymentAmount', pretax), ('InvoiceDiscount', disc), ('DeductedByResourcePackage', '0'),
            ('ProductType', pc), ('ServicePeriod', str(3600 * (1 + i % 24))), ('Zone', 'cn-hangzhou-%s' % 'abcdefgh'[i % 8]),
            ('ListPrice', '%s\t' % (gross / 100).quantize(Decimal('0.000001'))), ('PretaxGrossAmount', gross),
            ('CashAmount', pretax), ('ProductCode', pc), ('BillingType', '其它'),
            ('ItemName', 'iZ%07dZ' % i), ('AfterDiscountAmount', gross - disc)]
        it[0] = ('BillingDate', '')
        it = [x for x in it if x[0] != 'BillingDate']
        if big:
            it.append(('ProductDetail2', 'padding ' * 8))
        items.append(it)
        if kind == 'SubscriptionOrder':
            orders.append(it)
    return items


def simple_item(acct, inst, kind, amount, gross=None, owner=None, **extra):
    """A DescribeInstanceBill item with the fields the connector maps."""
    gross = amount if gross is None else gross
    sub = 'Subscription' if kind in ('SubscriptionOrder', 'Refund') else 'PayAsYouGo'
    it = [('BillAccountID', acct), ('OwnerID', owner or acct), ('ProductCode', 'ecs'),
          ('ProductName', extra.pop('ProductName', 'ECS')), ('InstanceID', inst), ('Item', kind),
          ('SubscriptionType', sub), ('BillingItemCode', extra.pop('BillingItemCode', 'compute')),
          ('Currency', 'CNY'), ('Region', extra.pop('Region', 'cn-hangzhou')),
          ('Zone', extra.pop('Zone', 'cn-hangzhou-h')), ('PretaxGrossAmount', gross),
          ('InvoiceDiscount', extra.pop('InvoiceDiscount', Decimal('0.00'))),
          ('DeductedByCoupons', Decimal('0.00')), ('PretaxAmount', amount), ('PaymentAmount', amount)]
    it.extend(extra.items())
    return it


def gen_refund3():
    a = '1100000000000001'
    return [simple_item(a, 'i-r3', 'SubscriptionOrder', Decimal('100.00')),
            simple_item(a, 'i-r3', 'Refund', Decimal('-10.00')),
            simple_item(a, 'i-r3', 'Refund', Decimal('-5.00'))]


def gen_dupes(n):
    """n groups, 11 items each, every group's items sharing natural keys."""
    a = ACCOUNTS[:5]
    items = []
    for g in range(n):
        acct = a[g % len(a)]
        inst = 'i-dup%d-%05d' % (n, g)
        base = Decimal(100 + g)
        items += [
            simple_item(acct, inst, 'SubscriptionOrder', base),
            # repeated identical refunds
            simple_item(acct, inst, 'Refund', Decimal('-7.00')),
            simple_item(acct, inst, 'Refund', Decimal('-7.00')),
            # partial refunds of different sizes
            simple_item(acct, inst, 'Refund', Decimal('-3.00')),
            simple_item(acct, inst, 'Refund', Decimal('-4.50')),
            # adjustments up and down
            simple_item(acct, inst, 'Adjustment', Decimal('1.25')),
            simple_item(acct, inst, 'Adjustment', Decimal('-1.25')),
            # usage differing only in one field each
            simple_item(acct, inst, 'PayAsYouGoBill', Decimal('2.00'), Zone='cn-hangzhou-h'),
            simple_item(acct, inst, 'PayAsYouGoBill', Decimal('2.00'), Zone='cn-hangzhou-i'),
            simple_item(acct, inst, 'PayAsYouGoBill', Decimal('2.00'), ProductName='ECS (spot)'),
            simple_item(acct, inst, 'PayAsYouGoBill', Decimal('2.01'))]
    return items


def gen_absurd():
    a = '1100000000000001'
    return [simple_item(a, 'i-ok', 'PayAsYouGoBill', Decimal('10.00')),
            simple_item(a, 'i-huge', 'PayAsYouGoBill', Decimal('1e400'), Decimal('1e400')),
            simple_item(a, 'i-big', 'PayAsYouGoBill', Decimal('100000000000000.00'), Decimal('100000000000000.00')),
            simple_item(a, 'i-fine', 'PayAsYouGoBill', Decimal('1.12345678901234567'), Decimal('1.12345678901234567')),
            simple_item(a, 'i-zeros', 'PayAsYouGoBill', Decimal('1.12345678000000'), Decimal('1.12345678000000'))]


MEMBER_PAYER = '1300000000000000'


def gen_members(spec):
    na, nl = (int(x) for x in spec.split('x'))
    items = []
    for k in range(na):
        owner = '13000000000000%02d' % k
        for i in range(nl):
            items.append(simple_item(MEMBER_PAYER, 'i-m%s-%02d-%05d' % (spec, k, i), 'PayAsYouGoBill',
                                     Decimal(i + 1) / 100, owner=owner))
    return items


DAILY_CACHE = {}


def daily_spec(name):
    lines, pages = (int(x) for x in name[len('daily-'):].split('x'))
    return lines, pages


def month_days(cycle):
    y, m = int(cycle[:4]), int(cycle[5:7])
    ny, nm = (y + 1, 1) if m == 12 else (y, m + 1)
    import datetime
    return (datetime.date(ny, nm, 1) - datetime.timedelta(days=1)).day


def daily_items(name, cycle, owner, day):
    """The items of one day (day: 1..31) of a daily-<L>x<P> dataset: a dict with items
    (lists of pairs) and their JSON, cached."""
    key = (name, cycle, owner or '', day)
    with DS_LOCK:
        if key in DAILY_CACHE:
            return DAILY_CACHE[key]
    nl, npages = daily_spec(name)
    m = month_days(cycle)
    n = nl * (npages // m + (1 if day <= npages % m else 0))
    rnd = random.Random('%s/%s/%s/%d' % (name, cycle, owner or '-', day))
    date = '%s-%02d' % (cycle, day)
    items = []
    for i in range(n):
        acct = MEMBER_PAYER if owner else ACCOUNTS[i % 5]
        own = owner or acct
        pc, pname, _ = PRODUCTS[i % len(PRODUCTS)]
        kind = 'SubscriptionOrder' if rnd.random() < 0.1 else 'PayAsYouGoBill'
        gross = Decimal(rnd.randint(1, 99_999_999)) * Q4
        disc = (gross * Decimal(rnd.choice([0, 5, 10, 15])) / 100).quantize(Q2, ROUND_HALF_EVEN)
        pretax = gross - disc
        it = simple_item(acct, 'i-%s-%02d-%05d' % (own[-4:], day, i), kind, pretax, gross=gross, owner=own,
                         InvoiceDiscount=disc, BillingItemCode='bi_%d' % (i % 4), ProductName=pname)
        it = [(k, pc if k == 'ProductCode' else v) for k, v in it]
        it.insert(0, ('BillingDate', date))
        it.append(('Usage', '%d' % rnd.randint(1, 24)))
        it.append(('ListPrice', str((gross / 24).quantize(Decimal('0.000001')))))
        items.append(it)
    entry = {'items': items, 'json': [item_json(i) for i in items], 'pages': {}}
    with DS_LOCK:
        DAILY_CACHE[key] = entry
    return entry


def expected_daily_csv(name, cycle, owner):
    out = []
    for d in range(1, month_days(cycle) + 1):
        e = daily_items(name, cycle, owner, d)
        pretax = sum((dict(it)['PretaxAmount'] for it in e['items']), Decimal(0))
        gross = sum((dict(it)['PretaxGrossAmount'] for it in e['items']), Decimal(0))
        out.append('%s-%02d,%d,%s,%s' % (cycle, d, len(e['items']), pretax, gross))
    return ('\n'.join(out) + '\n').encode()


def load_small(name='small'):
    with open(os.path.join(FIXTURES, '%s_items.json' % name), encoding='utf-8') as f:
        raw = json.load(f, parse_float=Decimal, parse_int=Decimal, object_pairs_hook=list)
    return raw


BAD_MARK = '@@0xFF@@'     # replaced by a lone 0xFF byte on the wire
DATASETS = {}
DS_LOCK = threading.Lock()


def dataset(name):
    with DS_LOCK:
        if name not in DATASETS:
            if name in ('small', 'demo'):
                items = load_small(name)
            elif name.startswith('month-'):
                items = gen_month(int(name[6:]))
            elif name.startswith('bench-'):
                items = gen_month(int(name[6:]), seed=7, big=True)
            elif name == 'refund3':
                items = gen_refund3()
            elif name.startswith('dupes-'):
                items = gen_dupes(int(name[6:]))
            elif name == 'absurd':
                items = gen_absurd()
            elif name == 'badutf8':
                items = load_small('small')
                items[6] = [(k, 'Bad' + BAD_MARK + 'Name' if k == 'ProductName' else v) for k, v in items[6]]
            elif name.startswith('members-'):
                items = gen_members(name[8:])
            else:
                raise KeyError(name)
            DATASETS[name] = {'items': items, 'json': [item_json(i) for i in items], 'pages': {}}
        return DATASETS[name]


def revised(it):
    out = []
    for k, v in it:
        if k in ('PretaxGrossAmount', 'PretaxAmount', 'PaymentAmount', 'CashAmount', 'AfterDiscountAmount'):
            v = v + Decimal('0.01')
        out.append((k, v))
    return out


def expected_csv(name):
    ds = dataset(name)
    agg = {}
    for it in ds['items']:
        d = dict(it)
        key = (str(d.get('BillAccountID', '')).strip(), str(d.get('ProductCode', '')).strip())
        a = agg.setdefault(key, [0, Decimal(0), Decimal(0)])
        a[0] += 1
        for i, f in ((1, 'PretaxAmount'), (2, 'PretaxGrossAmount')):
            try:
                a[i] += Decimal(str(d.get(f)).strip())
            except Exception:
                pass
    lines = ['%s,%s,%d,%s,%s' % (k[0], k[1], v[0], v[1], v[2]) for k, v in sorted(agg.items())]
    return ('\n'.join(lines) + '\n').encode()


def envelope(data_json, request_id=None):
    rid = request_id or 'MOCK-%08X' % random.getrandbits(32)
    return ('{"Code":"Success","Message":"Successful!","RequestId":"%s","Success":true,"Data":%s}'
            % (rid, data_json)).encode()


def token_for(offset):
    return base64.b64encode(('T%08d' % offset).encode()).decode().rstrip('=')


def offset_for(token):
    try:
        t = base64.b64decode(token + '=' * (-len(token) % 4)).decode()
        if t[0] != 'T':
            raise ValueError
        return int(t[1:])
    except Exception:
        return None


# ---------------------------------------------------------------- server
KEYS = {}
COUNTS = {}
PULLS = {}
MIDFAIL = {}
THROTTLED = {}
INFLIGHT = {}
MAX_INFLIGHT = {}
BUCKETS = {}            # access key id -> [tokens, time of last refill]
KEYSTATS = {}           # access key id -> [requests, throttled]
COUNT_LOCK = threading.Lock()
BIG_BODY = None


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, fmt, *args):
        if os.environ.get('MOCK_VERBOSE'):
            sys.stderr.write('mock: ' + (fmt % args) + '\n')

    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def send(self, status, body, ctype='application/json;charset=utf-8', extra=None):
        # headers and body in one write: no Nagle / delayed-ACK stall per page
        head = ['HTTP/1.1 %d %s' % (status, self.responses.get(status, ('',))[0]),
                'Server: bss-mock', 'Content-Type: ' + ctype, 'Content-Length: %d' % len(body)]
        for k, v in (extra or {}).items():
            head.append('%s: %s' % (k, v))
        self.wfile.write(('\r\n'.join(head) + '\r\n\r\n').encode() + body)
        self.wfile.flush()

    def paging(self, query, n):
        """(MaxResults, offset of NextToken) of a request over n items, or None
        after replying with the real API's error for a bad one."""
        try:
            maxr = int(query.get('MaxResults', '20'))
        except ValueError:
            maxr = 0
        if maxr < 1 or maxr > 300:
            self.error(400, 'InvalidParameter', 'The specified MaxResults is invalid.')
            return None
        tok = query.get('NextToken', '')
        off = offset_for(tok) if tok else 0
        if off is None or off > n:
            self.error(400, 'InvalidParameter', 'The specified NextToken is invalid.')
            return None
        return maxr, off

    def error(self, status, code, message):
        rid = 'MOCK-ERR-%08X' % random.getrandbits(32)
        body = json.dumps({'RequestId': rid, 'HostId': 'business.aliyuncs.com', 'Code': code,
                           'Message': message,
                           'Recommend': 'https://api.aliyun.com/troubleshoot?q=%s&product=BssOpenApi' % code}).encode()
        self.send(status, body, extra={'x-acs-request-id': rid})

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        if u.path.startswith('/__stats/'):
            p = u.path[len('/__stats'):]
            with COUNT_LOCK:
                self.send(200, json.dumps({'requests': COUNTS.get(p, 0), 'throttled': THROTTLED.get(p, 0),
                                           'max_inflight': MAX_INFLIGHT.get(p, 0)}).encode())
            return
        if u.path == '/__keystats':
            with COUNT_LOCK:
                self.send(200, json.dumps({k: {'requests': v[0], 'throttled': v[1]}
                                           for k, v in KEYSTATS.items()}).encode())
            return
        if u.path.startswith('/files/'):
            name = os.path.basename(u.path)
            try:
                with open(os.path.join(FIXTURES, name), 'rb') as f:
                    return self.send(200, f.read(), 'text/csv')
            except OSError:
                return self.send(404, b'not found', 'text/plain')
        if u.path.startswith('/__expected_daily/'):
            a = u.path[len('/__expected_daily/'):].strip('/').split('/')
            self.send(200, expected_daily_csv(a[0], a[1], a[2] if len(a) > 2 else None), 'text/csv')
            return
        if u.path.startswith('/__expected/'):
            self.send(200, expected_csv(u.path[len('/__expected/'):]), 'text/csv')
            return
        self.handle_api()

    def do_POST(self):
        self.handle_api()

    def handle_api(self):
        parts = [p for p in urllib.parse.urlsplit(self.path).path.split('/') if p]
        path = '/' + '/'.join(parts[:3]) + '/'
        with COUNT_LOCK:
            INFLIGHT[path] = INFLIGHT.get(path, 0) + 1
            MAX_INFLIGHT[path] = max(MAX_INFLIGHT.get(path, 0), INFLIGHT[path])
        try:
            self.handle_api1()
        finally:
            with COUNT_LOCK:
                INFLIGHT[path] -= 1

    def handle_api1(self):
        u = urllib.parse.urlsplit(self.path)
        n = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(n) if n else b''
        parts = [p for p in u.path.split('/') if p]
        if len(parts) < 3 or parts[0] != 'm':
            return self.error(404, 'InvalidAction.NotFound', 'Specified api is not found, please check your url and method.')
        ds_name, fault = parts[1], parts[2]
        path = '/' + '/'.join(parts[:3]) + '/'
        with COUNT_LOCK:
            COUNTS[path] = COUNTS.get(path, 0) + 1
            nreq = COUNTS[path]

        # signature
        query = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
        auth = self.headers.get('Authorization', '')
        try:
            cred = auth.split('Credential=')[1].split(',')[0]
            signed = auth.split('SignedHeaders=')[1].split(',')[0].split(';')
        except IndexError:
            return self.error(400, 'IncompleteSignature', 'The request signature does not conform to Aliyun standards.')
        if cred not in KEYS:
            return self.error(404, 'InvalidAccessKeyId.NotFound', 'Specified access key is not found.')
        if hashlib.sha256(body).hexdigest() != self.headers.get('x-acs-content-sha256', ''):
            return self.error(400, 'SignatureDoesNotMatch', 'x-acs-content-sha256 does not match the body.')
        hdrs = {h: self.headers.get(h, '') for h in signed if h not in ('host',)}
        want, canon = acs3(self.command, self.headers.get('Host', ''), query, hdrs, body, cred, KEYS[cred])
        if want != auth:
            return self.error(400, 'SignatureDoesNotMatch',
                              'Specified signature is not matched with our calculation. server string to sign is:'
                              + hashlib.sha256(canon.encode()).hexdigest())
        action = self.headers.get('x-acs-action', '')
        if self.headers.get('x-acs-version') != '2017-12-14':
            return self.error(400, 'InvalidVersion', 'Specified parameter Version is not valid.')

        # flow control per AccessKey, then the round trip
        lim = re.fullmatch(r'(?:limit(\d+))?(?:lat(\d+))?', fault)
        if lim and fault:
            rate, lat = lim.group(1), lim.group(2)
            if rate:
                rate = int(rate)
                cap = max(1.0, rate / 2.0)
                with COUNT_LOCK:
                    now = time.monotonic()
                    b = BUCKETS.setdefault(cred, [cap, now])
                    b[0] = min(cap, b[0] + (now - b[1]) * rate)
                    b[1] = now
                    ks = KEYSTATS.setdefault(cred, [0, 0])
                    ks[0] += 1
                    ok = b[0] >= 1.0
                    if ok:
                        b[0] -= 1.0
                    else:
                        ks[1] += 1
                        THROTTLED[path] = THROTTLED.get(path, 0) + 1
                if not ok:
                    return self.error(400, 'Throttling.User', 'Request was denied due to user flow control.')
            if lat:
                time.sleep(int(lat) / 1000.0)

        # counted faults
        k = 0
        if 'x' in fault and fault[-1].isdigit():
            base, k = fault.rsplit('x', 1)
            k = int(k)
        else:
            base = fault
        if nreq <= k or base.endswith('always'):
            base = base.replace('always', '')
            if base == 'e500':
                return self.error(500, 'InternalError', 'The request processing has failed due to some unknown error.')
            if base == 'e503':
                return self.error(503, 'ServiceUnavailable', 'The request has failed due to a temporary failure of the server.')
            if base == 'throttle':
                return self.error(400, 'Throttling.User', 'Request was denied due to user flow control.')
            if base == 'e429':
                return self.error(429, 'Throttling', 'Request was denied due to request throttling.')
            if base == 'slow':
                time.sleep(3)
            if base == 'reset':
                self.send_response(200)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', '100000')
                self.end_headers()
                self.wfile.write(b'{"Code":"Success","Data":{"Items":[{"PretaxAmount":1')
                self.wfile.flush()
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
                self.close_connection = True
                self.connection.close()
                return

        cycle = query.get('BillingCycle', '')
        if ds_name.startswith('daily-'):
            return self.daily(ds_name, query, action, fault, path, lim)
        try:
            ds = dataset(ds_name)
        except (KeyError, ValueError):
            return self.error(400, 'InvalidParameter', 'Unknown dataset.')
        if ds_name.startswith('members-'):
            # per bill owner: a member's lines with BillOwnerId, else the payer's own
            owner = query.get('BillOwnerId') or MEMBER_PAYER
            key = 'owner:' + owner
            if key not in ds:
                sel = [i for i, it in enumerate(ds['items']) if dict(it)['OwnerID'] == owner]
                ds[key] = {'items': [ds['items'][i] for i in sel], 'json': [ds['json'][i] for i in sel],
                           'pages': {}}
            ds = ds[key]
        if action == 'QueryBillOverview':
            return self.overview(ds, cycle)
        if action != 'DescribeInstanceBill':
            return self.error(404, 'InvalidAction.NotFound', 'Specified api is not found.')

        page = self.paging(query, len(ds['items']))
        if page is None:
            return
        maxr, off = page
        if not query.get('NextToken', ''):
            if fault in ('revise', 'drop', 'droptrunc'):
                with COUNT_LOCK:
                    PULLS[path] = PULLS.get(path, 0) + 1
        if fault.startswith('midfailx') and off > 0:
            with COUNT_LOCK:
                MIDFAIL[path] = MIDFAIL.get(path, 0) + 1
                n = MIDFAIL[path]
            if n <= int(fault[8:]):
                return self.error(503, 'ServiceUnavailable', 'The request has failed due to a temporary failure of the server.')
        if fault == 'pace':
            time.sleep(0.03)    # a slower provider, for the crash test
        if fault == 'trickle':
            return self.trickle()
        if fault == 'big':
            return self.send(200, BIG_BODY)
        if fault == 'ctype' and off > 0:
            return self.send(200, b'<html><body>Gateway says hello</body></html>', 'text/html')

        end = min(off + maxr, len(ds['items']))
        if fault == 'repeat' and off == maxr:
            # the second page repeats the first page's items before its own
            items_json = ds['json'][0:end]
        elif fault in ('drop', 'droptrunc'):
            items_json = [ds['json'][i] for i in range(off, end)
                          if not (i == 3 and PULLS.get(path, 1) > 1)]
        elif fault == 'revise' and PULLS.get(path, 1) > 1:
            items_json = [item_json(revised(ds['items'][i])) if i % 10 == 0 else ds['json'][i]
                          for i in range(off, end)]
        else:
            key = (off, maxr)
            page = ds['pages'].get(key) if fault in ('ok', 'pace', 'truncated', 'badtoken', 'ctype', 'repeat') or 'x' in fault or (lim and fault) else None
            if page is not None and fault not in ('truncated', 'badtoken'):
                return self.send(200, page)
            items_json = ds['json'][off:end]
        nxt = token_for(end) if end < len(ds['items']) else ''
        if fault == 'badtoken' and nxt:
            nxt = 'CAESEgoQCg4KCmdhcmJhZ2U'
        data = ('{"NextToken":"%s","BillingCycle":"%s","MaxResults":%d,"AccountID":"1100000000000000",'
                '"TotalCount":%d,"AccountName":"reseller@example.aliyunid.com","Items":[%s]}'
                % (nxt, cycle, maxr, len(ds['items']), ','.join(items_json)))
        out = envelope(data).replace(BAD_MARK.encode(), b'\xff')
        if fault in ('truncated', 'droptrunc') and off > 0 and (fault == 'truncated' or PULLS.get(path, 1) > 1):
            out = out[:len(out) // 2]
        if fault in ('ok', 'pace', 'repeat') or ('x' in fault and fault[-1].isdigit()) or (lim and fault):
            if not (fault == 'repeat' and off == maxr):
                ds['pages'][(off, maxr)] = out
        return self.send(200, out)

    def daily(self, ds_name, query, action, fault, path, lim):
        cycle = query.get('BillingCycle', '')
        if not re.fullmatch(r'\d{4}-(0[1-9]|1[0-2])', cycle):
            return self.error(400, 'InvalidParameter', 'The specified BillingCycle is invalid.')
        try:
            daily_spec(ds_name)
        except ValueError:
            return self.error(400, 'InvalidParameter', 'Unknown dataset.')
        owner = query.get('BillOwnerId') or None
        nd = month_days(cycle)
        gran = query.get('Granularity', 'MONTHLY')
        if action == 'QueryBillOverview':
            items = [it for d in range(1, nd + 1) for it in daily_items(ds_name, cycle, owner, d)['items']]
            return self.overview({'items': items}, cycle)
        if action != 'DescribeInstanceBill':
            return self.error(404, 'InvalidAction.NotFound', 'Specified api is not found.')
        if gran == 'DAILY':
            bd = query.get('BillingDate', '')
            if not bd:
                return self.error(400, 'MissingParameter', 'BillingDate is mandatory when Granularity is DAILY.')
            if not re.fullmatch(r'\d{4}-\d{2}-\d{2}', bd) or bd[:7] != cycle or not 1 <= int(bd[8:]) <= nd:
                return self.error(400, 'InvalidParameter', 'The specified BillingDate is invalid.')
            day = int(bd[8:])
            e = daily_items(ds_name, cycle, owner, day)
            items, items_json, cache = e['items'], e['json'], e['pages']
        elif gran == 'MONTHLY':
            day = None
            es = [daily_items(ds_name, cycle, owner, d) for d in range(1, nd + 1)]
            items = [it for e in es for it in e['items']]
            items_json = [j for e in es for j in e['json']]
            cache = {}
        else:
            return self.error(400, 'InvalidParameter', 'The specified Granularity is invalid.')
        page = self.paging(query, len(items))
        if page is None:
            return
        maxr, off = page
        dm = re.fullmatch(r'd(\d\d)(revise|drop|droptrunc|dropslow)', fault)
        op = dm.group(2) if dm and day == int(dm.group(1)) else None
        pulls = 1
        if op:
            with COUNT_LOCK:
                if off == 0:
                    PULLS[(path, day, owner)] = PULLS.get((path, day, owner), 0) + 1
                pulls = PULLS.get((path, day, owner), 1)
        end = min(off + maxr, len(items))
        plain = op is None or pulls == 1
        if plain and (off, maxr) in cache:
            return self.send(200, cache[(off, maxr)])
        if not plain and op == 'dropslow' and off > 0:
            time.sleep(2)
        if not plain and op in ('drop', 'droptrunc', 'dropslow'):
            page = [items_json[i] for i in range(off, end) if i != 3]
        elif not plain and op == 'revise':
            page = [item_json(revised(items[i])) if i % 10 == 0 else items_json[i] for i in range(off, end)]
        else:
            page = items_json[off:end]
        nxt = token_for(end) if end < len(items) else ''
        data = ('{"NextToken":"%s","BillingCycle":"%s","MaxResults":%d,"AccountID":"1100000000000000",'
                '"TotalCount":%d,"AccountName":"reseller@example.aliyunid.com","Items":[%s]}'
                % (nxt, cycle, maxr, len(items), ','.join(page)))
        out = envelope(data)
        if not plain and op == 'droptrunc' and off > 0:
            out = out[:len(out) // 2]
        if plain and day is not None:
            cache[(off, maxr)] = out
        return self.send(200, out)

    def overview(self, ds, cycle):
        agg = {}
        for it in ds['items']:
            d = dict(it)
            key = (str(d.get('BillAccountID', '')).strip(), str(d.get('ProductCode', '')).strip(),
                   str(d.get('SubscriptionType', '')).strip(), str(d.get('Currency', '')).strip())
            a = agg.setdefault(key, [Decimal(0)] * 4)
            for i, f in enumerate(('PretaxGrossAmount', 'InvoiceDiscount', 'DeductedByCoupons', 'PretaxAmount')):
                try:
                    a[i] += Decimal(str(d.get(f, '0')).strip() or '0')
                except Exception:
                    pass
        items = []
        for (acct, pc, sub, cur), a in sorted(agg.items()):
            items.append(item_json([('BillAccountID', acct), ('BillAccountName', acct + '@example'),
                                    ('ProductCode', pc), ('ProductType', pc), ('SubscriptionType', sub),
                                    ('Item', 'PayAsYouGoBill'), ('Currency', cur),
                                    ('PretaxGrossAmount', a[0]), ('InvoiceDiscount', a[1]),
                                    ('DeductedByCoupons', a[2]), ('PretaxAmount', a[3]),
                                    ('PaymentAmount', a[3]), ('OutstandingAmount', Decimal('0')),
                                    ('BizType', 'trusteeship')]))
        data = '{"BillingCycle":"%s","AccountID":"1100000000000000","Items":{"Item":[%s]}}' % (cycle, ','.join(items))
        return self.send(200, envelope(data))

    def trickle(self):
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', '1000000')
        self.end_headers()
        try:
            for _ in range(600):
                self.wfile.write(b' ')
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass
        self.close_connection = True


def serve(port, cert, key, keys_file, portfile):
    global BIG_BODY
    with open(keys_file) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith('#'):
                kid, sec = line.split(':', 1)
                KEYS[kid] = sec
    pad = 'x' * 1024
    n = 50 * 1024
    BIG_BODY = envelope('{"NextToken":"","TotalCount":0,"Items":[],"Padding":[%s]}'
                        % ','.join(['"%s"' % pad] * n))
    httpd = ThreadingHTTPServer(('127.0.0.1', port), Handler)
    httpd.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    if portfile:
        with open(portfile + '.tmp', 'w') as f:
            f.write(str(httpd.server_address[1]))
        os.rename(portfile + '.tmp', portfile)
    httpd.serve_forever()


if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] == 'sign':
        method, host, q, h, kid, sec = sys.argv[2:8]
        body = sys.argv[8].encode() if len(sys.argv) > 8 else b''
        print(acs3(method, host, json.loads(q), json.loads(h), body, kid, sec)[0])
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == 'expected':
        sys.stdout.write(expected_csv(sys.argv[2]).decode())
        sys.exit(0)
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument('--port', type=int, default=0)
    ap.add_argument('--cert', required=True)
    ap.add_argument('--key', required=True)
    ap.add_argument('--keys', required=True, help='file of access_key_id:access_key_secret lines')
    ap.add_argument('--portfile')
    a = ap.parse_args()
    serve(a.port, a.cert, a.key, a.keys, a.portfile)
