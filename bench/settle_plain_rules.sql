-- Baseline (b) of bench/settle.sh, untimed part: the same commission rules as
-- bench/settle_data.sql publishes, held the way a plain SQL implementation
-- would hold them — relational tables — plus half-even rounding in SQL.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
DROP TABLE IF EXISTS plain_rule, plain_clause, plain_tier, plain_lineage, plain_statement;
-- per reseller: the rule version, its per-customer cap and refund window
CREATE TABLE plain_rule (reseller_id bigint PRIMARY KEY, rule_version integer NOT NULL,
	customer_cap numeric NOT NULL, refund_window_days integer NOT NULL);
INSERT INTO plain_rule SELECT r.reseller_id, 1, 2000 + (r.reseller_id % 5) * 500, 90
  FROM settle.reseller r WHERE r.code LIKE 'bench-%';
-- clauses, most specific first: product lists, then category, then otherwise
CREATE TABLE plain_clause (clause smallint PRIMARY KEY, products text[], category text, rate numeric, tiered boolean NOT NULL);
INSERT INTO plain_clause VALUES
	(1, '{ecs,ack}', NULL, NULL, true),
	(2, '{rds,polardb}', NULL, 0.06, false),
	(3, NULL, 'storage', 0.04, false),
	(4, NULL, NULL, 0.03, false);
-- all-units tiers on customer monthly spend: [lo, hi)
CREATE TABLE plain_tier (tier smallint PRIMARY KEY, lo numeric NOT NULL, hi numeric, rate numeric NOT NULL);
INSERT INTO plain_tier VALUES (1, 0, 10000, 0.05), (2, 10000, 50000, 0.07), (3, 50000, NULL, 0.09);

CREATE TABLE plain_lineage (LIKE settle.settlement_line INCLUDING ALL);
CREATE TABLE plain_statement (reseller_id bigint PRIMARY KEY, period text NOT NULL, lines bigint NOT NULL,
	gross_charges numeric NOT NULL, commission numeric NOT NULL, refunds numeric NOT NULL, total numeric NOT NULL);

CREATE OR REPLACE FUNCTION plain_round_half_even(x numeric, places integer) RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT AS $$
	SELECT CASE WHEN abs(x * 10::numeric ^ places - trunc(x * 10::numeric ^ places)) = 0.5
	            THEN round(2 * round(x * 10::numeric ^ places / 2) / 10::numeric ^ places, places)
	            ELSE round(x, places) END
$$;
