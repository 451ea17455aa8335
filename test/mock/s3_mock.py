#!/usr/bin/env python3
"""Mock S3-compatible bucket (HTTPS) for settle's object-storage connector tests.

Serves the files under --root as buckets, path style:

    GET https://127.0.0.1:PORT/<bucket>?list-type=2&prefix=P&continuation-token=T&max-keys=N
        -> ListObjectsV2 XML (Key, ETag, Size, LastModified; IsTruncated and
           NextContinuationToken when more keys follow; at most --page-size
           keys a page whatever max-keys asks, so paging is exercised)
    GET https://127.0.0.1:PORT/<bucket>/<key>
        -> the object's bytes, ETag = quoted hex MD5 of them (as S3 gives for
           single-part uploads), Content-Type application/gzip for *.gz

The test changes the bucket by changing the files (a rewritten object gets a
new ETag).  Faults are chosen by the key: a key containing "forbidden" is
answered 403 AccessDenied, one containing "slow" after --slow-ms.

Every request must be signed with AWS Signature Version 4 (AWS4-HMAC-SHA256)
by a key of --keys (lines access_key_id:secret): the mock recomputes the
signature with its own implementation from the request as received and
answers 403 SignatureDoesNotMatch (or InvalidAccessKeyId) otherwise; requests
whose x-amz-date is more than 15 minutes off are refused as S3 does
(RequestTimeTooSkewed).

Control: GET /__stats -> {"requests": {path: n}, "bad_signatures": n}.
Also:    s3_mock.py sign METHOD PATH QUERY HEADERSJSON ID SECRET REGION  (prints the header)
"""
import datetime
import hashlib
import hmac
import json
import os
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape

KEYS = {}
ROOT = '.'
PAGE_SIZE = 1000
SLOW_MS = 1500
STATS = {'requests': {}, 'bad_signatures': 0}
LOCK = threading.Lock()


# ---------------------------------------------------------------- signing
def uri_encode(s, keep_slash):
    return urllib.parse.quote(s, safe='-_.~' + ('/' if keep_slash else ''))


def signature_v4(method, raw_path, raw_query, headers, signed, payload_hash,
                 amz_date, region, service, secret):
    """Independent AWS4-HMAC-SHA256 over the request as received."""
    # the path as sent (already encoded once by the client), normalised to
    # the S3 encoding so that a client encoding more or less than S3 fails
    path = uri_encode(urllib.parse.unquote(raw_path), True)
    pairs = urllib.parse.parse_qsl(raw_query, keep_blank_values=True)
    query = '&'.join('%s=%s' % (uri_encode(k, False), uri_encode(v, False))
                     for k, v in sorted(pairs))
    canon_headers = ''.join('%s:%s\n' % (n, ' '.join(headers.get(n, '').split()))
                            for n in signed)
    canonical = '\n'.join([method, path, query, canon_headers, ';'.join(signed), payload_hash])
    scope = '%s/%s/%s/aws4_request' % (amz_date[:8], region, service)
    to_sign = '\n'.join(['AWS4-HMAC-SHA256', amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    k = ('AWS4' + secret).encode()
    for part in (amz_date[:8], region, service, 'aws4_request'):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest(), canonical


def s3_error(code, message):
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code><Message>%s</Message>'
            '<RequestId>mock</RequestId></Error>' % (code, escape(message))).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, fmt, *args):
        sys.stderr.write('s3_mock: ' + (fmt % args) + '\n')

    def reply(self, status, body, ctype='application/xml', extra=None):
        self.send_response(status)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def check_signature(self, path, query):
        auth = self.headers.get('Authorization', '')
        if not auth.startswith('AWS4-HMAC-SHA256 '):
            return 'AccessDenied', 'no AWS4-HMAC-SHA256 Authorization header'
        parts = dict(p.strip().split('=', 1) for p in auth[len('AWS4-HMAC-SHA256 '):].split(','))
        try:
            key_id, date, region, service, term = parts['Credential'].split('/')
            signed = parts['SignedHeaders'].split(';')
            given = parts['Signature']
        except (KeyError, ValueError):
            return 'AuthorizationHeaderMalformed', 'malformed Authorization header'
        if key_id not in KEYS:
            return 'InvalidAccessKeyId', 'unknown access key id'
        if term != 'aws4_request' or service != 's3':
            return 'AuthorizationHeaderMalformed', 'bad credential scope'
        if 'host' not in signed or 'x-amz-date' not in signed or 'x-amz-content-sha256' not in signed:
            return 'AccessDenied', 'host, x-amz-date and x-amz-content-sha256 must be signed'
        amz_date = self.headers.get('x-amz-date', '')
        try:
            t = datetime.datetime.strptime(amz_date, '%Y%m%dT%H%M%SZ').replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            return 'AccessDenied', 'bad x-amz-date'
        if abs((datetime.datetime.now(datetime.timezone.utc) - t).total_seconds()) > 900 or date != amz_date[:8]:
            return 'RequestTimeTooSkewed', 'x-amz-date too far from the server time'
        payload = self.headers.get('x-amz-content-sha256', '')
        if payload not in ('UNSIGNED-PAYLOAD', hashlib.sha256(b'').hexdigest()):
            return 'XAmzContentSHA256Mismatch', 'x-amz-content-sha256 does not match the (empty) body'
        headers = {k.lower(): v for k, v in self.headers.items()}
        want, canonical = signature_v4('GET', path, query, headers, signed, payload, amz_date,
                                       region, service, KEYS[key_id])
        if not hmac.compare_digest(want, given):
            return 'SignatureDoesNotMatch', 'expected canonical request:\n' + canonical
        return None

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        if u.path == '/__stats':
            with LOCK:
                body = json.dumps(STATS).encode()
            return self.reply(200, body, 'application/json')
        with LOCK:
            STATS['requests'][u.path] = STATS['requests'].get(u.path, 0) + 1
        bad = self.check_signature(u.path, u.query)
        if bad:
            with LOCK:
                STATS['bad_signatures'] += 1
            return self.reply(403, s3_error(*bad))
        segs = urllib.parse.unquote(u.path).lstrip('/').split('/', 1)
        bucket = segs[0]
        bdir = os.path.join(ROOT, bucket)
        if not bucket or '..' in segs[0] or not os.path.isdir(bdir):
            return self.reply(404, s3_error('NoSuchBucket', 'no such bucket'))
        if len(segs) == 1 or segs[1] == '':
            return self.list_objects(bdir, bucket, dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True)))
        key = segs[1]
        if '..' in key.split('/'):
            return self.reply(400, s3_error('InvalidArgument', 'bad key'))
        if 'forbidden' in key:
            return self.reply(403, s3_error('AccessDenied', 'Access Denied'))
        if 'slow' in key:
            time.sleep(SLOW_MS / 1000.0)
        fn = os.path.join(bdir, key)
        if not os.path.isfile(fn):
            return self.reply(404, s3_error('NoSuchKey', 'The specified key does not exist.'))
        with open(fn, 'rb') as f:
            data = f.read()
        self.reply(200, data, 'application/gzip' if key.endswith('.gz') else 'text/csv',
                   {'ETag': '"%s"' % hashlib.md5(data).hexdigest()})

    def list_objects(self, bdir, bucket, q):
        if q.get('list-type') != '2':
            return self.reply(400, s3_error('InvalidArgument', 'only ListObjectsV2 (list-type=2) is served'))
        prefix = q.get('prefix', '')
        try:
            max_keys = min(int(q.get('max-keys', '1000')), PAGE_SIZE)
        except ValueError:
            return self.reply(400, s3_error('InvalidArgument', 'bad max-keys'))
        keys = []
        for dirpath, _, files in os.walk(bdir):
            for fn in files:
                k = os.path.relpath(os.path.join(dirpath, fn), bdir).replace(os.sep, '/')
                if k.startswith(prefix):
                    keys.append(k)
        keys.sort()
        token = q.get('continuation-token')
        if token:
            start_after = urllib.parse.unquote(token[len('after:'):]) if token.startswith('after:') else None
            if start_after is None:
                return self.reply(400, s3_error('InvalidArgument', 'The continuation token provided is incorrect'))
            keys = [k for k in keys if k > start_after]
        page, more = keys[:max_keys], len(keys) > max_keys
        out = ['<?xml version="1.0" encoding="UTF-8"?>',
               '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
               '<Name>%s</Name><Prefix>%s</Prefix><KeyCount>%d</KeyCount><MaxKeys>%d</MaxKeys>'
               '<IsTruncated>%s</IsTruncated>' % (escape(bucket), escape(prefix), len(page), max_keys,
                                                 'true' if more else 'false')]
        if token:
            out.append('<ContinuationToken>%s</ContinuationToken>' % escape(token))
        if more:
            out.append('<NextContinuationToken>%s</NextContinuationToken>'
                       % escape('after:' + urllib.parse.quote(page[-1], safe='')))
        for k in page:
            fn = os.path.join(bdir, k)
            with open(fn, 'rb') as f:
                etag = hashlib.md5(f.read()).hexdigest()
            st = os.stat(fn)
            out.append('<Contents><Key>%s</Key><LastModified>%s</LastModified><ETag>&quot;%s&quot;</ETag>'
                       '<Size>%d</Size><StorageClass>STANDARD</StorageClass></Contents>'
                       % (escape(k), datetime.datetime.fromtimestamp(st.st_mtime, datetime.timezone.utc)
                          .strftime('%Y-%m-%dT%H:%M:%S.000Z'), etag, st.st_size))
        out.append('</ListBucketResult>')
        self.reply(200, '\n'.join(out).encode())


def serve(port, cert, key, keys_file, portfile):
    with open(keys_file) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith('#'):
                kid, sec = line.split(':', 1)
                KEYS[kid] = sec
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
        method, path, query, hdrs, kid, sec, region = sys.argv[2:9]
        headers = {k.lower(): v for k, v in json.loads(hdrs).items()}
        signed = sorted(headers)
        sig, _ = signature_v4(method, path, query, headers, signed, headers['x-amz-content-sha256'],
                              headers['x-amz-date'], region, 's3', sec)
        print('AWS4-HMAC-SHA256 Credential=%s/%s/%s/s3/aws4_request, SignedHeaders=%s, Signature=%s'
              % (kid, headers['x-amz-date'][:8], region, ';'.join(signed), sig))
        sys.exit(0)
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument('--port', type=int, default=0)
    ap.add_argument('--cert', required=True)
    ap.add_argument('--key', required=True)
    ap.add_argument('--keys', required=True, help='file of access_key_id:secret lines')
    ap.add_argument('--root', required=True, help='directory whose subdirectories are the buckets')
    ap.add_argument('--page-size', type=int, default=1000)
    ap.add_argument('--slow-ms', type=int, default=1500)
    ap.add_argument('--portfile')
    a = ap.parse_args()
    ROOT, PAGE_SIZE, SLOW_MS = a.root, a.page_size, a.slow_ms
    serve(a.port, a.cert, a.key, a.keys, a.portfile)
