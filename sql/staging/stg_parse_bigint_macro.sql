-- parse_bigint(text): the BIGINT an integer field spells, else NULL. Not a table (no grain).
-- Accepts plain integers ("8693", "007", "+5", "-3") and integral decimals ("8693.0", the way
-- the real events.csv writes transactionid); rejects everything TRY_CAST alone would round or
-- reinterpret ("8693.5", "1e3", "0x10", "1_000", " 12"), empty text and BIGINT overflow.
-- The fast path (canonical integers round-trip through TRY_CAST) skips the regex for nearly
-- every field of a clean file.
CREATE OR REPLACE TEMP MACRO parse_bigint(field_text) AS
    CASE
        WHEN TRY_CAST(field_text AS BIGINT)::VARCHAR = field_text THEN TRY_CAST(field_text AS BIGINT)
        WHEN regexp_full_match(field_text, '[+-]?[0-9]+([.]0*)?')
            THEN TRY_CAST(split_part(field_text, '.', 1) AS BIGINT)
    END
