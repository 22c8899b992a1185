-- CMS165 Controlling High Blood Pressure (ControllingHighBloodPressureFHIR 0.1.000, eCQM 2025), hand-written
-- as a warehouse measure mart in DuckDB SQL: the peer of measures/cms165.yaml (benchmarks/duckdb_peer.py).
--
-- Reads: the shared models of benchmarks/sql/common.sql (the concept dimension, with this measure's value sets;
--   the staging views; the library definitions as table macros of the period; the time conventions), over the
--   lake views and the valueset table that benchmarks/duckdb_peer.py creates; and the lake views observation,
--   observation_component and encounter directly, for the blood pressure readings.
-- Parameters: $period_start, $period_end (DATE): the measurement period, both days included, in UTC.
-- Session: benchmarks/sql/session.sql (TimeZone UTC; the macros local_date and has_coding).
-- Returns one row per patient: patient_id, initial_population, denominator, denominator_exclusion, numerator.
WITH
-- the staging views of common.sql, materialized once for this query: the library macros it calls read these
-- copies too (common.sql, "staging views"), so each table is scanned once
encounters AS MATERIALIZED (FROM encounters),
conditions AS MATERIALIZED (FROM conditions),
procedures AS MATERIALIZED (FROM procedures),
observations AS MATERIALIZED (FROM observations),
-- "Essential Hypertension Diagnosis": prevalence overlapping [start of MP, start of MP + 6 months)
essential_hypertension AS (
    SELECT patient_id FROM conditions
    WHERE concept = 'Essential Hypertension'
        AND prevalence_overlaps(
            start, "end", clinical_status,
            CAST($period_start AS TIMESTAMPTZ), CAST($period_start + INTERVAL 6 MONTH AS TIMESTAMPTZ))
),
-- "Pregnancy or Renal Diagnosis": prevalence overlapping MP
pregnancy_or_renal_diagnosis AS (
    SELECT patient_id FROM conditions
    WHERE concept IN (
            'Pregnancy', 'End Stage Renal Disease', 'Kidney Transplant Recipient',
            'Chronic Kidney Disease, Stage 5')
        AND prevalence_overlaps(
            start, "end", clinical_status, CAST($period_start AS TIMESTAMPTZ), CAST($period_end + 1 AS TIMESTAMPTZ))
),
-- "End Stage Renal Disease Procedures": performed, ending on or before end of MP
end_stage_renal_disease_procedures AS (
    SELECT patient_id FROM procedures
    WHERE concept IN ('Kidney Transplant', 'Dialysis Services')
        AND status = 'completed'
        AND before_end_of("end", $period_end)
),
-- "End Stage Renal Disease Encounter": performed, starting on or before end of MP
end_stage_renal_disease_encounter AS (
    SELECT patient_id FROM encounters
    WHERE concept = 'ESRD Monthly Outpatient Services'
        AND encounter_performed(status)
        AND starts_by_end_of(start, "end", $period_end)
),
-- "Qualifying Systolic / Diastolic Blood Pressure Reading" (the same query in the CQL): observation-bp
-- (the declared profile), final/amended/corrected, not part of an EMER/IMP/ACUTE/NONAC/PRENC/SS encounter
-- (a missing encounter keeps the reading), latest() during day of MP
blood_pressure_reading AS MATERIALIZED (
    SELECT o.patient_id, o.id, o.reading_date
    FROM (
        SELECT
            patient_id, id, status, encounter_id, profiles,
            local_date(COALESCE("end", start), tz_offset_min) AS reading_date
        FROM observation
    ) o
    WHERE list_contains(o.profiles, 'http://hl7.org/fhir/StructureDefinition/bp')
        AND observation_final(o.status)
        AND o.reading_date BETWEEN $period_start AND $period_end
        AND NOT EXISTS (
            SELECT 1 FROM encounter e
            WHERE e.patient_id = o.patient_id AND e.id = o.encounter_id
                AND e.class_code IN ('EMER', 'IMP', 'ACUTE', 'NONAC', 'PRENC', 'SS')
        )
),
-- "Most Recent Blood Pressure Day": the readings on the patient's latest reading date
blood_pressure_on_most_recent_day AS (
    SELECT patient_id, id
    FROM blood_pressure_reading
    QUALIFY reading_date = max(reading_date) OVER (PARTITION BY patient_id)
),
-- the first systolic (LOINC 8480-6) and the first diastolic (8462-4) component of each reading (by
-- component index; any coding of the component's code matches), its value in mm[Hg]: mmHg is the same unit,
-- a missing unit is mm[Hg], any other unit does not convert (unknown)
blood_pressure_component AS MATERIALIZED (
    SELECT
        c.patient_id, c.observation_id, k.kind,
        CASE
            WHEN c.value_unit IS NULL OR c.value_unit IN ('mm[Hg]', 'mmHg') THEN c.value_quantity
        END AS mm_hg
    FROM (
        SELECT patient_id, observation_id, component_ix, value_quantity, value_unit, unnest(code) AS coding
        FROM observation_component
    ) c
    JOIN (VALUES ('systolic', 'http://loinc.org', '8480-6'), ('diastolic', 'http://loinc.org', '8462-4'))
        AS k(kind, system, code) ON k.system = c.coding.system AND k.code = c.coding.code
    QUALIFY row_number() OVER (
        PARTITION BY c.patient_id, c.observation_id, k.kind ORDER BY c.component_ix
    ) = 1
),
-- "Lowest Systolic / Diastolic Reading on Most Recent Blood Pressure Day": that kind's component of the
-- readings on that day, sorted ascending (unknown first), ties by id
lowest_reading AS (
    SELECT k.kind, r.patient_id, c.mm_hg
    FROM blood_pressure_on_most_recent_day r
    CROSS JOIN (VALUES ('systolic'), ('diastolic')) AS k(kind)
    LEFT JOIN blood_pressure_component c
        ON c.patient_id = r.patient_id AND c.observation_id = r.id AND c.kind = k.kind
    QUALIFY row_number() OVER (PARTITION BY k.kind, r.patient_id ORDER BY c.mm_hg ASC NULLS FIRST, r.id ASC) = 1
),
criteria AS (
    SELECT
        p.patient_id,
        (p.age BETWEEN 18 AND 85
            AND p.patient_id IN (SELECT patient_id FROM essential_hypertension)
            AND p.patient_id IN (SELECT patient_id FROM qualifying_encounters($period_start, $period_end))
        ) AS initial_population,
        (p.patient_id IN (SELECT patient_id FROM hospice_services($period_start, $period_end))
            OR p.patient_id IN (SELECT patient_id FROM pregnancy_or_renal_diagnosis)
            OR p.patient_id IN (SELECT patient_id FROM end_stage_renal_disease_procedures)
            OR p.patient_id IN (SELECT patient_id FROM end_stage_renal_disease_encounter)
            -- "Is Age 66 to 80 with Advanced Illness and Frailty or Is Age 81 or Older with Frailty"
            OR (p.patient_id IN (SELECT patient_id FROM frailty($period_start, $period_end))
                AND (p.age >= 81
                    OR (p.age BETWEEN 66 AND 80
                        AND p.patient_id IN (
                            SELECT patient_id
                            FROM advanced_illness_or_dementia_medications($period_start, $period_end)))))
            -- "Is Age 66 or Older Living Long Term in a Nursing Home"
            OR (p.age >= 66 AND p.patient_id IN (SELECT patient_id FROM nursing_home($period_end)))
            OR p.patient_id IN (SELECT patient_id FROM palliative_care($period_start, $period_end))
        ) AS exclusion,
        -- "Has Systolic Blood Pressure Less Than 140" and "Has Diastolic Blood Pressure Less Than 90"
        (p.patient_id IN (SELECT patient_id FROM lowest_reading WHERE kind = 'systolic' AND mm_hg < 140)
            AND p.patient_id IN (SELECT patient_id FROM lowest_reading WHERE kind = 'diastolic' AND mm_hg < 90)
        ) AS numerator
    FROM patients($period_end) p
)
-- the populations (common.sql: proportion)
SELECT patient_id, unnest(proportion(initial_population, exclusion, numerator)) FROM criteria ORDER BY patient_id
