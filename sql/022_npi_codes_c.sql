-- 022_npi_codes_c: the NPI and the primary taxonomy code of npi_providers compare byte by byte
-- (COLLATE "C"). Both are codes (ten digits; nine digits or capitals and an X) with no linguistic
-- order. In the database's collation (C.UTF-8 in scripts/stack's, often en_US.UTF-8 elsewhere)
-- every comparison of an index build calls strcoll, and PostgreSQL cannot sort on abbreviated keys; in "C" it compares
-- the first eight bytes as one integer and rarely needs more. The key and the taxonomy index are
-- built again after each first NPPES load: on the 1,000,000 rows of bench_nppes.py, about 0.6 and
-- 1.1 s, about 0.45 and 0.7 s in "C".
--
-- The meaning stays: equality is byte equality in every deterministic collation, and digits and
-- capitals sort the same in C, C.UTF-8 and en_US.UTF-8. A comparison with a text of the default
-- collation (referral_sources.npi, taxonomies.code, a parameter) takes "C", PostgreSQL's rule for
-- a column's collation against the default, so those joins and lookups still use these indexes;
-- the indexes of the other side, in the default collation, cannot serve them (such a join hashes or
-- probes npi_providers instead).
-- No row is rewritten (text in any collation is the same bytes); the two indexes are built again.
ALTER TABLE npi_providers
    ALTER COLUMN npi TYPE text COLLATE "C",
    ALTER COLUMN primary_taxonomy_code TYPE text COLLATE "C";
