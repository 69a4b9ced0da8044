-- 017_npi_sync_reopen: the NPI Registry sync brings back providers a deactivation took away, and
-- reopens the prospects closed with them, by the same rule as the NPPES import.
--
-- The registry returns active NPIs only. When a sync takes in an NPI whose npi_providers row an NPPES
-- file marked deactivated (status 'D', deactivation_date set), the provider is active again: the row
-- is rewritten (even with the same last_updated), its deactivation date cleared, and a referral source
-- 016 closed because of that deactivation becomes a prospect again, unless a coordinator changed it
-- since. Each run counts the prospects it reopened.

ALTER TABLE npi_sync_runs ADD COLUMN reopened integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN npi_sync_runs.reopened IS
    'Prospects closed on a deactivation that this run found active in the registry and reopened.';

-- The sources closed on a deactivation are few: the reopening finds them here, whatever the size of
-- referral_sources.
CREATE INDEX referral_sources_closed_idx ON referral_sources (npi) WHERE closed_on_deactivation_at IS NOT NULL;

-- The reopening rule, for the NPPES import and the registry sync alike: a source still inactive with
-- 016's note (no coordinator has changed its status since) whose provider is active again becomes a
-- prospect, the note cleared. p_npis restricts it to those NPIs; NULL: every NPI. Returns how many.
-- Either way the sources are found by an index condition on their NPIs (the given ones, or those of
-- the closed sources), not by filtering every closed source against the list.
CREATE FUNCTION referral_sources_reopen(p_npis text[]) RETURNS integer
LANGUAGE sql AS $$
    WITH reopened AS (
        UPDATE referral_sources r SET status = 'prospect', closed_on_deactivation_at = NULL
          FROM npi_providers p
         WHERE r.npi = ANY (coalesce(p_npis, ARRAY(SELECT npi FROM referral_sources
                                                    WHERE closed_on_deactivation_at IS NOT NULL)))
           AND p.npi = r.npi AND p.status = 'A' AND r.status = 'inactive'
           AND r.closed_on_deactivation_at IS NOT NULL
        RETURNING 1)
    SELECT count(*)::integer FROM reopened
$$;

-- 015's npi_take_page with a fifth figure, reopened. A provider whose row is deactivated is not
-- unchanged even when its last_updated is: the registry showing it means it is active again. Its row
-- gets the registry's status ('A' when the record carries none) and no deactivation date, its referral
-- source the registry's fields, and the page's reactivated NPIs go through referral_sources_reopen.
DROP FUNCTION npi_take_page(bigint, bigint, jsonb);
CREATE FUNCTION npi_take_page(p_run bigint, p_coordinator bigint, p_page jsonb,
                              OUT seen integer, OUT created integer, OUT updated integer,
                              OUT unchanged integer, OUT reopened integer)
LANGUAGE plpgsql AS $$
DECLARE
    r           record;
    old_upd     timestamptz;
    was_deact   boolean;
    had         boolean;
    same        boolean;
    src_id      bigint;
    spec        text;
    t           record;
    reactivated text[] := '{}';
BEGIN
    seen := 0; created := 0; updated := 0; unchanged := 0; reopened := 0;
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
        SELECT last_updated, status = 'D' OR deactivation_date IS NOT NULL INTO old_upd, was_deact
          FROM npi_providers WHERE npi = r.npi;
        had := FOUND;
        same := had AND old_upd IS NOT DISTINCT FROM r.last_updated AND was_deact IS NOT TRUE;
        SELECT id INTO src_id FROM referral_sources WHERE npi = r.npi;
        IF same AND src_id IS NOT NULL THEN
            unchanged := unchanged + 1;
            CONTINUE;
        END IF;
        IF was_deact THEN
            reactivated := reactivated || r.npi;
        END IF;
        SELECT * INTO t FROM npi_taxonomy_arrays(r.taxonomies);
        INSERT INTO npi_providers AS p (npi, enumeration_type, first_name, middle_name, last_name,
                organization_name, credential, sex, primary_taxonomy_code, primary_taxonomy_desc,
                taxonomy_codes, taxonomy_primary, taxonomy_descs, taxonomy_states, taxonomy_licenses,
                address_line1, address_line2, city, state, postal_code, phone, fax, mailing_address,
                enumeration_date, last_updated, status, deactivation_date, origin, raw, fetched_at)
        VALUES (r.npi, r.enumeration_type, r.first_name, r.middle_name, r.last_name, r.organization_name,
                r.credential, r.sex, r.primary_taxonomy_code, r.primary_taxonomy_desc,
                t.codes, t.prim, t.descs, t.states, t.licenses,
                r.address_line1, r.address_line2, r.city, r.state, r.postal_code, r.phone, r.fax,
                r.mailing_address, r.enumeration_date, r.last_updated, coalesce(r.status, 'A'), NULL, 'api',
                r.raw, now())
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
                status = EXCLUDED.status, deactivation_date = NULL, origin = 'api', raw = EXCLUDED.raw,
                fetched_at = now()
        WHERE p.last_updated IS DISTINCT FROM EXCLUDED.last_updated OR p.status = 'D'
              OR p.deactivation_date IS NOT NULL;
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
        ELSIF same THEN
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
    IF cardinality(reactivated) > 0 THEN
        reopened := referral_sources_reopen(reactivated);
    END IF;
END $$;
