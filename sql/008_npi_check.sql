-- 008_npi_check: the same rule for an NPI (ten digits) in a form that costs a fraction of the regular
-- expression per row, which counts when the NPPES file loads millions of rows.
ALTER TABLE npi_providers DROP CONSTRAINT npi_providers_npi_check,
    ADD CONSTRAINT npi_providers_npi_check CHECK (length(npi) = 10 AND ltrim(npi, '0123456789') = '');
