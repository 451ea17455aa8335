#!/usr/bin/env python3
"""Feeds the rule type's input functions mutated inputs through a running
server (used by test/valgrind.sh, so every call runs under memcheck).

Text input (settle.rule_in): every seed, every prefix of it, and each seed
with the byte at each position replaced by a character of the rule
language's syntax.  Binary input (settle.rule_recv, through COPY ... FORMAT
binary): each seed's settle.rule_send bytes, every prefix, and each byte
flipped (xor 0x01, 0x80 or 0xff, in turn).  Every input that is accepted is printed back,
sent, and evaluated on one line.  The result is only that no call crashes the
backend: a refused input is fine.

usage: rule_inputs.py SEEDDIR WORKDIR DATABASE   (PGHOST/PGPORT/PGUSER set)
"""
import os
import struct
import subprocess
import sys

seeddir, workdir, db = sys.argv[1:4]


def psql(sql, *args):
    r = subprocess.run(['psql', '-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-d', db, *args],
                       input=sql, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout + r.stderr)
        sys.exit(1)
    return r.stdout


seeds = [open(os.path.join(seeddir, n), 'rb').read() for n in sorted(os.listdir(seeddir))]
syntax = b' \n#%".,-=0123456789azAZ'
texts = set()
for s in seeds:
    texts.add(s)
    for i in range(len(s)):
        texts.add(s[:i])
        c = syntax[i % len(syntax)]
        texts.add(s[:i] + bytes([c]) + s[i + 1:])
texts = sorted(texts)
with open(os.path.join(workdir, 'text.tsv'), 'w') as f:
    for t in texts:
        f.write(t.hex() + '\n')

setup = r"""
CREATE TEMP TABLE rule_text_input (hex text);
\copy rule_text_input FROM '%s'
CREATE FUNCTION pg_temp.exercise(r settle.rule) RETURNS text LANGUAGE plpgsql AS $$
DECLARE e record;
BEGIN
	SELECT * INTO e FROM settle.evaluate_rule(r, product => 'ecs', category => 'compute', sku => 'ecs.g7.large',
		region => 'cn-hangzhou', segment => 'enterprise', tags => '{"env": "prod"}', billed_cost => 1234.56,
		list_cost => 1300, amount_paid => 1234.56, active_days => 10, days_in_month => 31,
		customer_spend => 20000, customer_spend_before => 9000, refund_age_days => 5);
	RETURN md5(r::text || settle.rule_send(r)::text || coalesce(e.status, '') || coalesce(e.commission::text, '')
		|| coalesce(array_to_string(settle.rule_problems(r), ','), '') || coalesce(settle.rule_clause(r, 1), ''));
END $$;
CREATE FUNCTION pg_temp.try_text(h text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	RETURN pg_temp.exercise(convert_from(decode(h, 'hex'), 'UTF8')::settle.rule);
EXCEPTION WHEN OTHERS THEN
	RETURN 'refused ' || SQLSTATE;
END $$;
CREATE FUNCTION pg_temp.try_binary(path text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r settle.rule;
BEGIN
	CREATE TEMP TABLE IF NOT EXISTS rule_bin (r settle.rule);
	TRUNCATE rule_bin;
	EXECUTE format('COPY rule_bin FROM %%L (FORMAT binary)', path);
	SELECT rule_bin.r INTO r FROM rule_bin;
	RETURN pg_temp.exercise(r);
EXCEPTION WHEN OTHERS THEN
	RETURN 'refused ' || SQLSTATE;
END $$;
""" % os.path.join(workdir, 'text.tsv')

out = psql(setup + "SELECT (r LIKE 'refused%')::text, count(*) FROM (SELECT pg_temp.try_text(hex) r FROM rule_text_input) x GROUP BY 1 ORDER BY 1;")
print('text inputs: %d (%s)' % (len(texts), ' '.join(out.split())))

# binary: the seeds' wire format, mutated
sent = psql(''.join("SELECT encode(settle.rule_send(convert_from(decode('%s', 'hex'), 'UTF8')::settle.rule), 'hex');\n"
                    % s.hex() for s in seeds)).split()
blobs = set()
for h in sent:
    b = bytes.fromhex(h)
    blobs.add(b)
    for i in range(len(b)):
        blobs.add(b[:i])
        x = (0x01, 0x80, 0xff)[i % 3]
        blobs.add(b[:i] + bytes([b[i] ^ x]) + b[i + 1:])
blobs = sorted(blobs)
bindir = os.path.join(workdir, 'bin')
os.makedirs(bindir, exist_ok=True)
os.chmod(bindir, 0o755)
paths = []
for n, b in enumerate(blobs):
    p = os.path.join(bindir, '%05d.copy' % n)
    with open(p, 'wb') as f:
        f.write(b'PGCOPY\n\xff\r\n\x00' + struct.pack('!ii', 0, 0))
        f.write(struct.pack('!hi', 1, len(b)) + b + struct.pack('!h', -1))
    os.chmod(p, 0o644)
    paths.append(p)
with open(os.path.join(workdir, 'bin.tsv'), 'w') as f:
    f.write('\n'.join(paths) + '\n')
out = psql(setup.replace("\\copy rule_text_input FROM '%s'" % os.path.join(workdir, 'text.tsv'), '')
           + "CREATE TEMP TABLE rule_bin_input (path text);\n\\copy rule_bin_input FROM '%s'\n" % os.path.join(workdir, 'bin.tsv')
           + "SELECT (r LIKE 'refused%')::text, count(*) FROM (SELECT pg_temp.try_binary(path) r FROM rule_bin_input) x GROUP BY 1 ORDER BY 1;")
print('binary inputs: %d (%s)' % (len(blobs), ' '.join(out.split())))
