-- 020_npi_check_send: the rule for an NPI (ten digits) once more, at a small part of 015's cost per
-- row, which the NPPES full file pays ten million times: the value's bytes come from textsend, a copy,
-- where convert_to looks up two encodings by name and checks the string for every row.
--
-- textsend gives the bytes in the session's client encoding. The rule's verdict is the same in every
-- one: ten ASCII digits are the same ten bytes in every encoding PostgreSQL speaks, and any other
-- character becomes a byte that is not a digit (a lead byte of 0x80 or more), or an error when the
-- client's encoding cannot hold it. Either way such a value is refused; only the error can differ.
ALTER TABLE npi_providers DROP CONSTRAINT npi_providers_npi_check,
    ADD CONSTRAINT npi_providers_npi_check
        CHECK (octet_length(npi) = 10 AND octet_length(ltrim(textsend(npi), '\x30313233343536373839'::bytea)) = 0);
