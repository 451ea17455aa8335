-- Ingestion: the SQL surface (no network).  The pulls themselves are tested
-- against the mock endpoint in test/process/ingest_*.sh.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS settle CASCADE;
RESET client_min_messages;

-- ACS3-HMAC-SHA256: Alibaba's published documentation example (V3 signature
-- doc, RunInstances on ecs.cn-shanghai.aliyuncs.com).
SELECT settle.acs3_authorization('POST', 'ecs.cn-shanghai.aliyuncs.com',
	'{"ImageId": "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd", "RegionId": "cn-shanghai"}',
	'{"x-acs-action": "RunInstances", "x-acs-version": "2014-05-26",
	  "x-acs-date": "2023-10-26T10:22:32Z", "x-acs-signature-nonce": "3156853299f313e23d1673dc12e1703d"}',
	'', 'YourAccessKeyId', 'YourAccessKeySecret');
SELECT split_part(settle.acs3_authorization('POST', 'ecs.cn-shanghai.aliyuncs.com',
	'{"ImageId": "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd", "RegionId": "cn-shanghai"}',
	'{"x-acs-action": "RunInstances", "x-acs-version": "2014-05-26",
	  "x-acs-date": "2023-10-26T10:22:32Z", "x-acs-signature-nonce": "3156853299f313e23d1673dc12e1703d"}',
	'', 'YourAccessKeyId', 'YourAccessKeySecret'), 'Signature=', 2)
	= '06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0' AS matches_documentation;

-- Edge cases cross-checked with the independent Python signer in
-- test/mock/bss_mock.py ("sign"): RFC 3986 encoding of space, '*', '+', '/',
-- '=', '~' and UTF-8; numeric parameters; mixed-case header names; padded
-- values; content-type signed, accept not; a body.
SELECT settle.acs3_authorization('GET', 'business.ap-southeast-1.aliyuncs.com',
	'{"BillingCycle": "2026-10", "NextToken": "CAESEgoQ+/=", "ProductCode": "ecs rds*~", "MaxResults": 300, "Name.1": "云"}',
	'{"X-Acs-Action": "DescribeInstanceBill", "x-acs-version": "2017-12-14", "x-acs-date": "2026-11-03T05:00:00Z",
	  "x-acs-signature-nonce": "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "Content-Type": " application/json ", "Accept": "application/json"}',
	convert_to('{"a":1}', 'UTF8'), 'LTAItestkey', 'testsecret');

-- host and x-acs-content-sha256 always come from the arguments
SELECT settle.acs3_authorization('POST', 'h.example', '{}', '{"host": "evil.example", "x-acs-content-sha256": "00"}',
	NULL, 'id', 'secret') = settle.acs3_authorization('POST', 'h.example', '{}', '{}', '', 'id', 'secret') AS args_win;
-- the secret never appears in the result
SELECT position('secret' IN settle.acs3_authorization('POST', 'h', '{}', '{}', '', 'id', 'secret')) AS secret_pos;

-- bad arguments
SELECT settle.acs3_authorization('POST', 'h', '[1]', '{}', '', 'id', 's');
SELECT settle.acs3_authorization('POST', 'h', '{"a": {"b": 1}}', '{}', '', 'id', 's');
SELECT settle.acs3_authorization('', 'h', '{}', '{}', '', 'id', 's');

-- ingest_now: unknown connector, bad cycle
SELECT settle.ingest_now('no such connector');
INSERT INTO settle.connector (name, kind, endpoint, secret_name, config)
VALUES ('reg_bss', 'alibaba_bss', 'http://127.0.0.1:9/', 'reg_secret', '{"billing_cycle": "2026-10"}'),
       ('reg_ftp', 'alibaba_bss', 'ftp://127.0.0.1:9/', 'reg_secret', '{"billing_cycle": "2026-10"}'),
       ('reg_daily', 'alibaba_bss', 'https://127.0.0.1:9/', 'reg_secret', '{"granularity": "DAILY", "billing_cycle": "2099-01"}');
SELECT settle.ingest_now('reg_bss', '2026-13');
-- DAILY without billing_date: every day of the cycle up to today (UTC+8); a cycle to come has none
SELECT settle.ingest_now('reg_daily');
SELECT count(*), min(d), max(d) FROM settle.connector_days('alibaba_bss', '{"granularity": "DAILY"}', '2024-02') d;
SELECT count(*), min(d), max(d) FROM settle.connector_days('alibaba_bss', '{"granularity": "DAILY", "billing_cycle": "2026-11"}') d;
SELECT count(*) FROM settle.connector_days('alibaba_bss', '{"granularity": "DAILY", "billing_date": "2026-11-02"}', '2026-11');
SELECT count(*) FROM settle.connector_days('alibaba_bss', '{"granularity": "MONTHLY"}', '2026-11');
SELECT count(*) FROM settle.connector_days('focus_csv', '{"granularity": "DAILY"}', '2026-11');
SELECT count(*) FROM settle.connector_days('alibaba_bss', '{"granularity": "DAILY"}', '2026-13');
-- a config cycle that is not a month gives no days (the view and the launcher read every connector)
SELECT count(*) FROM settle.connector_days('alibaba_bss', '{"granularity": "DAILY", "billing_cycle": "2026-13"}');
SELECT count(*) FROM settle.connector_days('alibaba_bss', '{"granularity": "DAILY", "billing_cycle": "0000-01"}');
SELECT count(*) = extract(day FROM now() AT TIME ZONE 'UTC' + interval '8 hours') AS current_cycle_up_to_today
  FROM settle.connector_days('alibaba_bss', '{"granularity": "DAILY"}');
-- granularity and billing_date are checked when written (22023)
\set VERBOSITY sqlstate
INSERT INTO settle.connector (name, kind, endpoint, secret_name, config)
VALUES ('reg_bad', 'alibaba_bss', 'https://127.0.0.1:9/', 'reg_secret', '{"granularity": "HOURLY"}');
INSERT INTO settle.connector (name, kind, endpoint, secret_name, config)
VALUES ('reg_bad', 'alibaba_bss', 'https://127.0.0.1:9/', 'reg_secret', '{"granularity": "DAILY", "billing_date": "2026-10-32"}');
INSERT INTO settle.connector (name, kind, endpoint, secret_name, config)
VALUES ('reg_bad', 'alibaba_bss', 'https://127.0.0.1:9/', 'reg_secret', '{"granularity": "DAILY", "billing_date": "2026-02-29"}');
INSERT INTO settle.connector (name, kind, endpoint, secret_name, config)
VALUES ('reg_bad', 'alibaba_bss', 'https://127.0.0.1:9/', 'reg_secret', '{"granularity": "DAILY", "billing_date": 20261001}');
INSERT INTO settle.connector (name, kind, endpoint, secret_name, config)
VALUES ('reg_bad', 'alibaba_bss', 'https://127.0.0.1:9/', 'reg_secret', '{"billing_date": "2026-10-01"}');
\set VERBOSITY default
INSERT INTO settle.connector (name, kind, endpoint, secret_name, config)
VALUES ('reg_bad', 'alibaba_bss', 'https://127.0.0.1:9/', 'reg_secret', '{"granularity": "DAILY", "billing_cycle": "2026-10", "billing_date": "2026-11-01"}');
-- a billing_date outside the cycle pulled is refused when pulled
INSERT INTO settle.connector (name, kind, endpoint, secret_name, config)
VALUES ('reg_day', 'alibaba_bss', 'https://127.0.0.1:9/', 'reg_secret', '{"granularity": "DAILY", "billing_date": "2024-02-29"}');
SELECT settle.ingest_now('reg_day', '2024-03');

-- failures do not raise: the run is returned, failed, with a precise SQLSTATE
SET settle.allow_insecure_transport = off;
SET client_min_messages = warning;
SELECT status, error_sqlstate, error_message, pages, lines_seen, finished_at IS NOT NULL AS finished
  FROM settle.ingest_now('reg_bss');
SELECT status, error_sqlstate, error_message FROM settle.ingest_now('reg_ftp');
-- a secret that is not defined: named, never shown
SET settle.allow_insecure_transport = on;
SELECT status, error_sqlstate, error_message FROM settle.ingest_now('reg_bss');
RESET settle.allow_insecure_transport;
RESET client_min_messages;

-- settings: insecure transport and the secret file are superuser matters
CREATE ROLE reg_ingest_op IN ROLE settle_operator;
SET ROLE reg_ingest_op;
-- an operator runs pulls (no direct write access needed)
SET client_min_messages = warning;
SELECT status, error_sqlstate FROM settle.ingest_now('reg_ftp');
RESET client_min_messages;
SELECT count(*) FROM settle.ingest_run r JOIN settle.connector c USING (connector_id) WHERE c.name LIKE 'reg_%';
INSERT INTO settle.ingest_run (connector_id, triggered_by) VALUES (1, 'sql');
SET settle.allow_insecure_transport = on;
SHOW settle.secret_file;
SET settle.ca_file = '/tmp/x.pem';
RESET ROLE;
DROP ROLE reg_ingest_op;

-- health view
SELECT name, last_success, last_status, last_error_sqlstate, runs_24h, failed_24h, error_rate_24h
  FROM settle.ingest_health WHERE name LIKE 'reg_%' ORDER BY name;

-- append-only raw data and provider totals
INSERT INTO settle.raw_page (connector_id, request, http_status, body, body_sha256, requested_at)
SELECT connector_id, '{}', 200, '\x7b7d', sha256('\x7b7d'), now() FROM settle.connector WHERE name = 'reg_bss';
UPDATE settle.raw_page SET http_status = 0;
DELETE FROM settle.raw_page;

-- every ingestion object is documented
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'settle' AND c.relkind IN ('r', 'v')
   AND c.relname IN ('ingest_run', 'ingest_checkpoint', 'provider_total', 'provider_total_current', 'ingest_health')
   AND obj_description(c.oid, 'pg_class') IS NULL;
SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'settle' AND p.proname IN ('acs3_authorization', 'ingest_now', 'ingest_reset')
   AND obj_description(p.oid, 'pg_proc') IS NULL;

-- clean up what this file created (ingest runs reference the connectors)
SELECT count(*) AS runs FROM settle.ingest_run r JOIN settle.connector c USING (connector_id) WHERE c.name LIKE 'reg_%';
