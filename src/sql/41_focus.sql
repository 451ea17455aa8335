-- 41: FOCUS files — the product mapping finance maintains.
--
-- A FOCUS file names products the way its provider does (ServiceName
-- "AWS CloudTrail", "Virtual Machines"; SkuId), not by settle's product
-- codes.  A file with an x_ProductCode column gives the code itself; for any
-- other line ingestion looks the SkuId up here, then the ServiceName, and a
-- name nobody mapped fails its lines with unmapped_product and opens one
-- exception for the name (not one per line).

CREATE TABLE settle.product_mapping (
	source_field text NOT NULL CHECK (source_field IN ('SkuId', 'ServiceName')),
	source_value text NOT NULL CHECK (source_value <> '' AND source_value = pg_catalog.btrim(source_value)),
	product_code text NOT NULL REFERENCES settle.product,
	PRIMARY KEY (source_field, source_value)
);
COMMENT ON TABLE settle.product_mapping IS
	'Provider product names to settle products, maintained by finance (settle.map_product): a FOCUS line without x_ProductCode takes the product of its SkuId, else of its ServiceName.  Names are matched exactly as the file writes them (case and spaces included).';

CREATE FUNCTION settle.map_product(source_field text, source_value text, product_code text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF source_field IS NULL OR source_field NOT IN ('SkuId', 'ServiceName') THEN
		RAISE EXCEPTION 'source_field must be SkuId or ServiceName, not %', coalesce(quote_literal(source_field), 'NULL')
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM settle.product p WHERE p.product_code = map_product.product_code) THEN
		RAISE EXCEPTION 'unknown product "%"', product_code
			USING ERRCODE = 'foreign_key_violation',
			      HINT = 'Add it to the catalogue first: settle.add_product(code, category, name).';
	END IF;
	INSERT INTO settle.product_mapping VALUES (source_field, source_value, product_code)
	ON CONFLICT ON CONSTRAINT product_mapping_pkey
	DO UPDATE SET product_code = excluded.product_code;
END $$;
COMMENT ON FUNCTION settle.map_product(text, text, text) IS
	'Maps a provider''s SkuId or ServiceName (exactly as its FOCUS files write it) to a catalogue product; mapping a name again replaces its product.  Lines already stored keep theirs until pulled again (a changed product is a new revision).';

SELECT settle._audited('settle.product_mapping');
SELECT pg_catalog.pg_extension_config_dump('settle.product_mapping', '');
