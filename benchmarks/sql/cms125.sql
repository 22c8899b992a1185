-- CMS125 Breast Cancer Screening (BreastCancerScreeningFHIR 0.0.001, eCQM 2025), hand-written as a
-- warehouse measure mart in DuckDB SQL: the peer of measures/cms125.yaml (benchmarks/duckdb_peer.py).
--
-- Reads: the shared models of benchmarks/sql/common.sql (the concept dimension, with this measure's value sets;
--   the staging views encounters, conditions, procedures, observations, requests, medication_requests; the
--   library definitions as table macros of the period; the time conventions), over the lake views and the
--   valueset table that benchmarks/duckdb_peer.py creates.
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
-- "Right / Left Mastectomy Diagnosis": status post that side's mastectomy, or unspecified laterality with that
-- body site, prevalence starting on or before end of MP; "Right / Left Mastectomy Procedure": performed, ending
-- on or before end of MP. "Bilateral Mastectomy Diagnosis" (history of) and "Bilateral Mastectomy Procedure":
-- the same without a body site.
mastectomy_kind(kind, diagnosis, body_site, procedure) AS (
    VALUES
        ('right', 'Status Post Right Mastectomy', '24028007', 'Unilateral Mastectomy Right'),
        ('left', 'Status Post Left Mastectomy', '7771000', 'Unilateral Mastectomy Left'),
        ('bilateral', 'History of bilateral mastectomy', NULL, 'Bilateral Mastectomy')
),
mastectomy AS (
    SELECT k.kind, d.patient_id
    FROM conditions d
    JOIN mastectomy_kind k
        ON d.concept = k.diagnosis
        OR (d.concept = 'Unilateral Mastectomy, Unspecified Laterality'
            AND has_coding(d.body_site, 'http://snomed.info/sct', k.body_site))
    WHERE starts_by_end_of(d.start, d."end", $period_end)
    UNION ALL
    SELECT k.kind, p.patient_id
    FROM procedures p
    JOIN mastectomy_kind k ON p.concept = k.procedure
    WHERE p.status = 'completed' AND before_end_of(p."end", $period_end)
),
-- "Numerator": a mammogram (diagnostic study performed) ending during day of [October 1 two years before the
-- MP year, end of MP]
mammogram AS (
    SELECT patient_id FROM observations
    WHERE concept = 'Mammography'
        AND observation_final(status)
        AND end_date BETWEEN make_date(year($period_start) - 2, 10, 1) AND $period_end
),
criteria AS (
    SELECT
        p.patient_id,
        (p.age BETWEEN 52 AND 74
            AND p.gender = 'female'
            AND p.patient_id IN (SELECT patient_id FROM qualifying_encounters($period_start, $period_end))
        ) AS initial_population,
        (p.patient_id IN (SELECT patient_id FROM hospice_services($period_start, $period_end))
            OR (p.patient_id IN (SELECT patient_id FROM mastectomy WHERE kind = 'right')
                AND p.patient_id IN (SELECT patient_id FROM mastectomy WHERE kind = 'left'))
            OR p.patient_id IN (SELECT patient_id FROM mastectomy WHERE kind = 'bilateral')
            -- "Is Age 66 or Older with Advanced Illness and Frailty"
            OR (p.age >= 66
                AND p.patient_id IN (SELECT patient_id FROM frailty($period_start, $period_end))
                AND p.patient_id IN (
                    SELECT patient_id FROM advanced_illness_or_dementia_medications($period_start, $period_end)))
            -- "Is Age 66 or Older Living Long Term in a Nursing Home"
            OR (p.age >= 66 AND p.patient_id IN (SELECT patient_id FROM nursing_home($period_end)))
            OR p.patient_id IN (SELECT patient_id FROM palliative_care($period_start, $period_end))
        ) AS exclusion,
        p.patient_id IN (SELECT patient_id FROM mammogram) AS numerator
    FROM patients($period_end) p
)
-- the populations (common.sql: proportion)
SELECT patient_id, unnest(proportion(initial_population, exclusion, numerator)) FROM criteria ORDER BY patient_id
