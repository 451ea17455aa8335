-- Account ids of every cloud a FOCUS file comes from are accepted wherever
-- an account id goes.  The ids are those of the FinOps Foundation's FOCUS
-- 1.0 sample (AWS, Microsoft, Oracle; anonymised, CC BY 4.0) and the
-- providers' documented forms (GCP, Alibaba Cloud, Azure MCA, OCI realm 1).
-- A catalogue sweep checks that no column holding an account id keeps a
-- narrower check of its own.
BEGIN;
SELECT plan(19);

CREATE TEMP TABLE ids (provider text, id text);
INSERT INTO ids VALUES
	('AWS billing account (sample)', '1234567890123'),
	('AWS sub account (sample)', '28975285017'),
	('AWS account (12 digits)', '123456789012'),
	('Azure subscription (sample)', '/subscriptions/73c0021f-a37d-433f-8baa-7450cb54eea6'),
	('Azure EA billing account (sample)', '/providers/Microsoft.Billing/billingAccounts/8611537'),
	('Azure MCA billing account', '/providers/Microsoft.Billing/billingAccounts/5e98e158-xxxx-xxxx-xxxx-xxxxxxxxxxxx:xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx_2019-05-31'),
	('OCI tenancy (sample)', 'ocid6.tenancy.oc6..aaaaaaaalnpeq6xok1okj8vknc9pzancima2g8bwvk2kk9jgwhgycacrie2q'),
	('OCI tenancy (realm oc1)', 'ocid1.tenancy.oc1..aaaaaaaaba3pv6wkcr4jqae5f15p2b2m2yt2j6rx32uzr4h25vqstifsfdsq'),
	('OCI billing account (sample)', '20209880'),
	('GCP billing account', '012345-6789AB-CDEF01'),
	('GCP project', 'my-project-123456'),
	('Alibaba Cloud UID', '1234567890123456');

SELECT settle.add_reseller('acct-r', 'Accounts');
SELECT settle.add_customer('acct-r', 'c' || row_number() OVER (), provider) FROM ids;

-- every id maps through the API and reads back unchanged
SELECT lives_ok(format($$SELECT settle.map_account(%L, 'acct-r', %L)$$, id, 'c' || n),
	'map_account accepts the ' || provider || ' id')
  FROM (SELECT id, provider, row_number() OVER () AS n FROM ids) s;
SELECT set_eq('SELECT account_id::text FROM settle.customer_account', 'SELECT id FROM ids',
	'all twelve ids are stored as given');

-- what no provider writes is refused, naming nothing half-written
SELECT throws_ok($$SELECT settle.map_account('1234 5678', 'acct-r', 'c1')$$, '23514', NULL, 'a blank in an id: 23514');
SELECT throws_ok($$SELECT settle.map_account('12,34', 'acct-r', 'c1')$$, '23514', NULL, 'a comma in an id: 23514');
SELECT throws_ok($$SELECT settle.map_account('', 'acct-r', 'c1')$$, '23514', NULL, 'an empty id: 23514');
SELECT throws_ok($$SELECT settle.map_account(repeat('1', 257), 'acct-r', 'c1')$$, '23514', NULL, 'an id over 256 characters: 23514');

-- catalogue sweep: every table column named *account_id* either is of the
-- domain settle.account_id or has no check of its own (bill lines keep what
-- the provider sent, however written)
SELECT is_empty($$
	SELECT c.conrelid::regclass::text || '.' || a.attname
	  FROM pg_catalog.pg_constraint c
	  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
	 WHERE c.contype = 'c' AND c.connamespace = 'settle'::regnamespace
	   AND a.attname LIKE '%account_id'$$,
	'no table CHECK constraint narrows an account id column');
SELECT ok((SELECT count(*) FROM information_schema.columns
	 WHERE table_schema = 'settle' AND domain_name = 'account_id') >= 1,
	'customer_account.account_id is of the domain settle.account_id');

SELECT * FROM finish();
ROLLBACK;
