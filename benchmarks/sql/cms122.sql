-- CMS122 Diabetes: Glycemic Status Assessment Greater Than 9% (an inverse measure;
-- DiabetesGlycemicStatusAssessmentGreaterThan9PercentFHIR 0.1.002, eCQM 2025), hand-written as a warehouse
-- measure mart in DuckDB SQL: the peer of measures/cms122.yaml (benchmarks/duckdb_peer.py).
--
-- Reads: the shared models of benchmarks/sql/common.sql (the concept dimension, with this measure's value sets;
--   the staging views; the library definitions as table macros of the period; the time conventions), over the
--   lake views and the valueset table that benchmarks/duckdb_peer.py creates.
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
-- "Initial Population" diagnosis: Diabetes, prevalence overlapping day of MP
diabetes AS (FROM diagnosis_in('Diabetes', $period_start, $period_end)),
-- "Glycemic Status Assessment": HbA1c laboratory test or glucose management indicator, laboratory test
-- performed, latest() during day of MP
glycemic_status_assessment AS MATERIALIZED (
    SELECT DISTINCT patient_id, id, value_type, value_quantity, value_unit, latest_date
    FROM observations
    WHERE concept IN ('HbA1c Laboratory Test', 'Glucose management indicator')
        AND observation_final(status)
        AND has_coding(category, 'http://terminology.hl7.org/CodeSystem/observation-category', 'laboratory')
        AND latest_date BETWEEN $period_start AND $period_end
),
-- "Most Recent Glycemic Status Date": the readings on the patient's latest date
glycemic_status_on_most_recent_day AS (
    SELECT
        *,
        -- the value as a Quantity in %: a missing unit is %; any other unit does not convert (unknown)
        CASE WHEN value_unit IS NULL OR value_unit = '%' THEN value_quantity END AS value_percent
    FROM glycemic_status_assessment
    QUALIFY latest_date = max(latest_date) OVER (PARTITION BY patient_id)
),
-- "Lowest Glycemic Status Assessment Reading on Most Recent Day": sorted by value (unknown first), ties by id
lowest_glycemic_status AS (
    SELECT patient_id, value_type, value_percent
    FROM glycemic_status_on_most_recent_day
    QUALIFY row_number() OVER (PARTITION BY patient_id ORDER BY value_percent ASC NULLS FIRST, id ASC) = 1
),
criteria AS (
    SELECT
        p.patient_id,
        (p.age BETWEEN 18 AND 75
            AND p.patient_id IN (SELECT patient_id FROM qualifying_encounters($period_start, $period_end))
            AND p.patient_id IN (SELECT patient_id FROM diabetes)
        ) AS initial_population,
        (p.patient_id IN (SELECT patient_id FROM hospice_services($period_start, $period_end))
            -- "Is Age 66 or Older Living Long Term in a Nursing Home"
            OR (p.age >= 66 AND p.patient_id IN (SELECT patient_id FROM nursing_home($period_end)))
            -- "Is Age 66 or Older with Advanced Illness and Frailty"
            OR (p.age >= 66
                AND p.patient_id IN (SELECT patient_id FROM frailty($period_start, $period_end))
                AND p.patient_id IN (
                    SELECT patient_id FROM advanced_illness_or_dementia_medications($period_start, $period_end)))
            OR p.patient_id IN (SELECT patient_id FROM palliative_care($period_start, $period_end))
        ) AS exclusion,
        -- "Has Most Recent Glycemic Status Assessment Without Result"
        (p.patient_id IN (SELECT patient_id FROM lowest_glycemic_status WHERE value_type IS NULL)
            -- "Has Most Recent Elevated Glycemic Status Assessment": > 9 %
            OR p.patient_id IN (SELECT patient_id FROM lowest_glycemic_status WHERE value_percent > 9)
            -- "Has No Record Of Glycemic Status Assessment"
            OR p.patient_id NOT IN (SELECT patient_id FROM glycemic_status_assessment)
        ) AS numerator
    FROM patients($period_end) p
)
-- the populations (common.sql: proportion)
SELECT patient_id, unnest(proportion(initial_population, exclusion, numerator)) FROM criteria ORDER BY patient_id
