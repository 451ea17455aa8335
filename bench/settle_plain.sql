-- Baseline (b) of bench/settle.sh, timed part: settle period :'period' in
-- plain SQL with the rules of settle_plain_rules.sql — the current revision
-- of every bill line, most specific clause, all-units tier on the customer's
-- monthly spend, per-customer cap consumed in line-key order, refunds
-- reversed at the rate their original earned (within the window), the
-- statement total rounded half-even to cents and the residual cents given to
-- the lines with the largest remainders (ties: line-key order) — written as
-- the same lineage rows as settle.settlement_line, plus the statements.
\set ON_ERROR_STOP on
BEGIN;
INSERT INTO plain_lineage
WITH lines AS (
	SELECT DISTINCT ON (b.reseller_id, b.line_key COLLATE "C")
	       b.reseller_id, b.line_key, b.revision, b.customer_id, b.charge_category, b.product_code,
	       b.billed_cost, b.original_line_key, b.source_item, (b.charge_period_start AT TIME ZONE 'UTC')::date AS line_date
	  FROM settle.bill_line b
	 WHERE (b.charge_period_start AT TIME ZONE 'UTC')::date >= to_date(:'period', 'YYYY-MM')
	   AND (b.charge_period_start AT TIME ZONE 'UTC')::date < to_date(:'period', 'YYYY-MM') + interval '1 month'
	 ORDER BY b.reseller_id, b.line_key COLLATE "C", b.revision DESC
), charges AS (
	SELECT * FROM lines WHERE original_line_key IS NULL AND source_item <> 'Refund'
), product_clause AS (		-- the most specific clause for each product
	SELECT DISTINCT ON (p.product_code) p.product_code, c.clause, c.rate, c.tiered
	  FROM settle.product p JOIN plain_clause c
	    ON (c.products IS NULL OR p.product_code = ANY (c.products)) AND (c.category IS NULL OR c.category = p.category)
	 ORDER BY p.product_code, c.clause
), customer_tier AS (		-- all units: the tier the customer's monthly spend reaches
	SELECT s.customer_id, t.tier, t.rate
	  FROM (SELECT customer_id, sum(billed_cost) AS spend FROM charges
	         WHERE charge_category IN ('Usage', 'Purchase') GROUP BY customer_id) s
	  JOIN plain_tier t ON s.spend >= t.lo AND (t.hi IS NULL OR s.spend < t.hi)
), rated AS (
	SELECT c.*, r.rule_version, r.customer_cap, pc.clause,
	       CASE WHEN pc.tiered THEN ct.tier END AS tier,
	       CASE WHEN pc.tiered THEN ct.rate ELSE pc.rate END AS rate,
	       CASE WHEN c.charge_category IN ('Usage', 'Purchase')
	            THEN c.billed_cost * CASE WHEN pc.tiered THEN ct.rate ELSE pc.rate END ELSE 0 END AS raw
	  FROM charges c
	  JOIN plain_rule r ON r.reseller_id = c.reseller_id
	  JOIN product_clause pc ON pc.product_code = c.product_code
	  LEFT JOIN customer_tier ct ON ct.customer_id = c.customer_id
), capped AS (			-- the cap is consumed in line-key order
	SELECT rated.*,
	       least(raw, greatest(0, customer_cap - coalesce(sum(raw) OVER (PARTITION BY customer_id
	             ORDER BY line_key COLLATE "C" ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0))) AS unrounded
	  FROM rated
), settled AS (
	SELECT reseller_id, line_key, 'c'::"char" AS kind, revision, rule_version, clause, tier, billed_cost AS basis,
	       rate, unrounded, NULL::text AS ref
	  FROM capped
	UNION ALL			-- refunds at the rate the original earned
	SELECT f.reseller_id, f.line_key, 'r', f.revision, o.rule_version, o.clause, o.tier, f.billed_cost,
	       o.rate, f.billed_cost * o.rate, o.line_key
	  FROM lines f JOIN capped o ON o.reseller_id = f.reseller_id AND o.line_key = f.original_line_key
	  JOIN plain_rule r ON r.reseller_id = f.reseller_id
	 WHERE (f.original_line_key IS NOT NULL OR f.source_item = 'Refund')
	   AND f.line_date - o.line_date <= r.refund_window_days
), floored AS (
	SELECT s.*, floor(s.unrounded * 100) / 100 AS fl FROM settled s
), residual AS (			-- residual cents per reseller
	SELECT reseller_id, ((plain_round_half_even(sum(unrounded), 2) - sum(fl)) * 100)::bigint AS k
	  FROM floored GROUP BY reseller_id
)
SELECT f.reseller_id, 1000 + f.reseller_id, f.line_key, f.kind, f.revision, f.rule_version, f.clause, f.tier,
       f.basis, f.rate, NULL::bigint, f.unrounded,
       f.fl + CASE WHEN row_number() OVER (PARTITION BY f.reseller_id
                        ORDER BY f.unrounded - f.fl DESC, f.line_key COLLATE "C") <= x.k THEN 0.01 ELSE 0 END,
       f.ref
  FROM floored f JOIN residual x USING (reseller_id);

INSERT INTO plain_statement
SELECT l.reseller_id, :'period', count(*),
       plain_round_half_even(sum(l.basis) FILTER (WHERE l.kind = 'c'), 2),
       coalesce(sum(l.rounded) FILTER (WHERE l.kind = 'c'), 0), coalesce(sum(l.rounded) FILTER (WHERE l.kind = 'r'), 0),
       sum(l.rounded)
  FROM plain_lineage l GROUP BY l.reseller_id;
COMMIT;
