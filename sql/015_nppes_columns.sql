-- 015_nppes_columns: a provider's taxonomies as parallel arrays instead of one jsonb list. The NPPES
-- full file writes millions of rows, and checking a jsonb value costs the server several times what
-- an array sent in COPY's binary form does. Element i of each array describes the provider's i-th
-- taxonomy: its NUCC code, whether it is the primary one, and (from the NPI Registry only; NULL
-- arrays from the NPPES file) its description, license state and license number. The function
-- taxonomies(npi_providers) gives the former JSON form, so that `p.taxonomies` still reads it.
ALTER TABLE npi_providers
    ADD COLUMN taxonomy_codes    text[],
    ADD COLUMN taxonomy_primary  boolean[],
    ADD COLUMN taxonomy_descs    text[],
    ADD COLUMN taxonomy_states   text[],
    ADD COLUMN taxonomy_licenses text[];

-- A JSON list of taxonomies as the arrays: the NPI Registry's form has a desc key in each element
-- ({code, desc, state, license, primary}), the NPPES file's only {code, primary}; NULL arrays for
-- NULL or for anything but a list.
CREATE FUNCTION npi_taxonomy_arrays(list jsonb, OUT codes text[], OUT prim boolean[], OUT descs text[],
                                    OUT states text[], OUT licenses text[])
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN a THEN coalesce(array_agg(e->>'code' ORDER BY i) FILTER (WHERE i IS NOT NULL), '{}') END,
           CASE WHEN a THEN coalesce(array_agg(coalesce(e->>'primary' = 'true', false) ORDER BY i)
                                         FILTER (WHERE i IS NOT NULL), '{}') END,
           CASE WHEN bool_or(e ? 'desc') THEN array_agg(e->>'desc' ORDER BY i) END,
           CASE WHEN bool_or(e ? 'desc') THEN array_agg(e->>'state' ORDER BY i) END,
           CASE WHEN bool_or(e ? 'desc') THEN array_agg(e->>'license' ORDER BY i) END
      FROM (SELECT jsonb_typeof(list) = 'array' AS a) l
      LEFT JOIN LATERAL jsonb_array_elements(CASE WHEN l.a THEN list END) WITH ORDINALITY AS x(e, i) ON true
     GROUP BY a
$$;

-- The rows written so far.
UPDATE npi_providers p SET (taxonomy_codes, taxonomy_primary, taxonomy_descs, taxonomy_states, taxonomy_licenses) =
       (SELECT t.codes, t.prim, t.descs, t.states, t.licenses FROM npi_taxonomy_arrays(p.taxonomies) t)
 WHERE p.taxonomies IS NOT NULL;

ALTER TABLE npi_providers DROP COLUMN taxonomies;

-- The taxonomies of a provider in the JSON form the column held: [{"code", "primary"}] from the NPPES
-- file, [{"code", "desc", "state", "license", "primary"}] from the NPI Registry; NULL when none was
-- recorded. Called as p.taxonomies or taxonomies(p).
CREATE FUNCTION taxonomies(p npi_providers) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p.taxonomy_codes IS NOT NULL THEN coalesce(
               (SELECT jsonb_agg(CASE WHEN p.taxonomy_descs IS NULL
                                      THEN jsonb_build_object('code', c, 'primary', p.taxonomy_primary[i])
                                      ELSE jsonb_build_object('code', c, 'desc', p.taxonomy_descs[i],
                                                              'state', p.taxonomy_states[i],
                                                              'license', p.taxonomy_licenses[i],
                                                              'primary', p.taxonomy_primary[i]) END ORDER BY i)
                  FROM unnest(p.taxonomy_codes) WITH ORDINALITY AS u(c, i)), '[]') END
$$;

-- 005's npi_take_page, writing the arrays from the page's taxonomies list.
CREATE OR REPLACE FUNCTION npi_take_page(p_run bigint, p_coordinator bigint, p_page jsonb,
                                         OUT seen integer, OUT created integer, OUT updated integer,
                                         OUT unchanged integer)
LANGUAGE plpgsql AS $$
DECLARE
    r        record;
    old_upd  timestamptz;
    had      boolean;
    src_id   bigint;
    spec     text;
    t        record;
BEGIN
    seen := 0; created := 0; updated := 0; unchanged := 0;
    FOR r IN SELECT * FROM jsonb_to_recordset(p_page) AS x(
            npi text, enumeration_type text, first_name text, middle_name text, last_name text,
            organization_name text, credential text, sex text, primary_taxonomy_code text,
            primary_taxonomy_desc text, taxonomies jsonb, address_line1 text, address_line2 text, city text,
            state text, postal_code text, phone text, fax text, mailing_address jsonb, enumeration_date date,
            last_updated timestamptz, status text, raw jsonb)
    LOOP
        INSERT INTO npi_sync_seen (run_id, npi) VALUES (p_run, r.npi) ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            CONTINUE;
        END IF;
        seen := seen + 1;
        SELECT last_updated INTO old_upd FROM npi_providers WHERE npi = r.npi;
        had := FOUND;
        SELECT id INTO src_id FROM referral_sources WHERE npi = r.npi;
        IF had AND old_upd IS NOT DISTINCT FROM r.last_updated AND src_id IS NOT NULL THEN
            unchanged := unchanged + 1;
            CONTINUE;
        END IF;
        SELECT * INTO t FROM npi_taxonomy_arrays(r.taxonomies);
        INSERT INTO npi_providers AS p (npi, enumeration_type, first_name, middle_name, last_name,
                organization_name, credential, sex, primary_taxonomy_code, primary_taxonomy_desc,
                taxonomy_codes, taxonomy_primary, taxonomy_descs, taxonomy_states, taxonomy_licenses,
                address_line1, address_line2, city, state, postal_code, phone, fax, mailing_address,
                enumeration_date, last_updated, status, origin, raw, fetched_at)
        VALUES (r.npi, r.enumeration_type, r.first_name, r.middle_name, r.last_name, r.organization_name,
                r.credential, r.sex, r.primary_taxonomy_code, r.primary_taxonomy_desc,
                t.codes, t.prim, t.descs, t.states, t.licenses,
                r.address_line1, r.address_line2, r.city, r.state, r.postal_code, r.phone, r.fax,
                r.mailing_address, r.enumeration_date, r.last_updated, r.status, 'api', r.raw, now())
        ON CONFLICT (npi) DO UPDATE SET
                enumeration_type = EXCLUDED.enumeration_type, first_name = EXCLUDED.first_name,
                middle_name = EXCLUDED.middle_name, last_name = EXCLUDED.last_name,
                organization_name = EXCLUDED.organization_name, credential = EXCLUDED.credential,
                sex = EXCLUDED.sex, primary_taxonomy_code = EXCLUDED.primary_taxonomy_code,
                primary_taxonomy_desc = EXCLUDED.primary_taxonomy_desc,
                taxonomy_codes = EXCLUDED.taxonomy_codes, taxonomy_primary = EXCLUDED.taxonomy_primary,
                taxonomy_descs = EXCLUDED.taxonomy_descs, taxonomy_states = EXCLUDED.taxonomy_states,
                taxonomy_licenses = EXCLUDED.taxonomy_licenses,
                address_line1 = EXCLUDED.address_line1, address_line2 = EXCLUDED.address_line2,
                city = EXCLUDED.city, state = EXCLUDED.state, postal_code = EXCLUDED.postal_code,
                phone = EXCLUDED.phone, fax = EXCLUDED.fax, mailing_address = EXCLUDED.mailing_address,
                enumeration_date = EXCLUDED.enumeration_date, last_updated = EXCLUDED.last_updated,
                status = EXCLUDED.status, origin = 'api', raw = EXCLUDED.raw, fetched_at = now()
        WHERE p.last_updated IS DISTINCT FROM EXCLUDED.last_updated;
        spec := CASE WHEN r.primary_taxonomy_code ~ '^[0-9A-Z]{9}X$' THEN r.primary_taxonomy_code END;
        IF src_id IS NULL THEN
            INSERT INTO referral_sources (kind, npi, first_name, last_name, organization_name, credential,
                    specialty_code, specialty, status, coordinator_id, phone, address_line1, city, state,
                    postal_code)
            VALUES (CASE WHEN r.enumeration_type = 'NPI-2' THEN 'organization' ELSE 'physician' END, r.npi,
                    r.first_name, coalesce(r.last_name, CASE WHEN r.enumeration_type <> 'NPI-2' THEN '' END),
                    r.organization_name, r.credential, spec, r.primary_taxonomy_desc, 'prospect', p_coordinator,
                    r.phone, r.address_line1, r.city, r.state, r.postal_code)
            ON CONFLICT (npi) DO NOTHING;
            created := created + 1;
        ELSIF had AND old_upd IS NOT DISTINCT FROM r.last_updated THEN
            unchanged := unchanged + 1;
        ELSE
            UPDATE referral_sources SET
                    first_name = r.first_name,
                    last_name = coalesce(r.last_name, last_name),
                    organization_name = coalesce(r.organization_name, organization_name),
                    credential = r.credential, specialty_code = coalesce(spec, specialty_code),
                    specialty = coalesce(r.primary_taxonomy_desc, specialty), phone = coalesce(r.phone, phone),
                    address_line1 = coalesce(r.address_line1, address_line1), city = coalesce(r.city, city),
                    state = coalesce(r.state, state), postal_code = coalesce(r.postal_code, postal_code)
             WHERE id = src_id;
            updated := updated + 1;
        END IF;
    END LOOP;
END $$;

-- The same rule for an NPI (ten digits) again, in a form that costs about a third of 013's per row:
-- ltrim on the value's bytes (bytea) is a plain byte loop, where ltrim on text walks UTF-8 characters.
-- The bytes are the UTF-8 ones whatever the client's encoding (convert_to, not textsend).
ALTER TABLE npi_providers DROP CONSTRAINT npi_providers_npi_check,
    ADD CONSTRAINT npi_providers_npi_check
        CHECK (octet_length(npi) = 10 AND octet_length(ltrim(convert_to(npi, 'UTF8'), '\x30313233343536373839'::bytea)) = 0);
