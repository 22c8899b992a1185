-- CMS165 Controlling High Blood Pressure (ControllingHighBloodPressureFHIR 0.1.000, eCQM 2025), hand-written
-- as a warehouse measure mart in DuckDB SQL: the peer of measures/cms165.yaml (benchmarks/duckdb_peer.py).
--
-- Reads: the canonical tables (datasets/schema.py) as views of the same names over the Parquet lake
--   (benchmarks/duckdb_peer.py creates them from the lake path), and valueset(valueset, system, code): the
--   expansions of the project's value sets (engine.library.load_valuesets), valueset = canonical URL.
-- Parameters: $period_start, $period_end (DATE): the measurement period, both days included, in UTC.
-- Session: benchmarks/sql/session.sql (TimeZone UTC; the macros local_date and has_coding).
-- Returns one row per patient: patient_id, initial_population, denominator, denominator_exclusion, numerator.
--
-- Time, as in docs/definition-language.md section 4 (and the same in every measure of benchmarks/sql/):
-- * a row's local date is the calendar date of its instant in its recorded offset (tz_offset_min, UTC when
--   null); "during day of" / "overlaps day of" compare those dates with the period's dates;
-- * instants compare at millisecond precision, so "on or before end of MP" (23:59:59.999) is "before the
--   midnight that follows the period";
-- * a null start is the beginning of time and a null end the end of time (CQL closed null boundaries); both
--   null: unknown, the row never qualifies; prevalenceInterval() ends at the end of time for an active,
--   recurring or relapsing condition without an end, and is unknown for any other condition without one.
WITH
-- -------------------------------------------------------------------------------------------------- concepts
-- the value sets the measure (and its libraries) reads, by name and VSAC OID
measure_valueset(concept, oid) AS (
    VALUES
        -- AdultOutpatientEncounters 4.11.000 "Qualifying Encounters"
        ('Office Visit', '2.16.840.1.113883.3.464.1003.101.12.1001'),
        ('Annual Wellness Visit', '2.16.840.1.113883.3.526.3.1240'),
        ('Preventive Care Services Established Office Visit, 18 and Up',
         '2.16.840.1.113883.3.464.1003.101.12.1025'),
        ('Preventive Care Services Initial Office Visit, 18 and Up',
         '2.16.840.1.113883.3.464.1003.101.12.1023'),
        ('Home Healthcare Services', '2.16.840.1.113883.3.464.1003.101.12.1016'),
        ('Virtual Encounter', '2.16.840.1.113883.3.464.1003.101.12.1089'),
        ('Telephone Visits', '2.16.840.1.113883.3.464.1003.101.12.1080'),
        -- Hospice 6.12.000
        ('Encounter Inpatient', '2.16.840.1.113883.3.666.5.307'),
        ('Hospice Encounter', '2.16.840.1.113883.3.464.1003.1003'),
        ('Hospice Care Ambulatory', '2.16.840.1.113883.3.526.3.1584'),
        ('Hospice Diagnosis', '2.16.840.1.113883.3.464.1003.1165'),
        -- PalliativeCare 1.11.000
        ('Palliative Care Encounter', '2.16.840.1.113883.3.464.1003.101.12.1090'),
        ('Palliative Care Intervention', '2.16.840.1.113883.3.464.1003.198.12.1135'),
        ('Palliative Care Diagnosis', '2.16.840.1.113883.3.464.1003.1167'),
        -- AdvancedIllnessandFrailty 1.16.000
        ('Advanced Illness', '2.16.840.1.113883.3.464.1003.110.12.1082'),
        ('Dementia Medications', '2.16.840.1.113883.3.464.1003.196.12.1510'),
        ('Frailty Device', '2.16.840.1.113883.3.464.1003.118.12.1300'),
        ('Frailty Diagnosis', '2.16.840.1.113883.3.464.1003.113.12.1074'),
        ('Frailty Encounter', '2.16.840.1.113883.3.464.1003.101.12.1088'),
        ('Frailty Symptom', '2.16.840.1.113883.3.464.1003.113.12.1075'),
        -- ControllingHighBloodPressureFHIR 0.1.000
        ('Essential Hypertension', '2.16.840.1.113883.3.464.1003.104.12.1011'),
        ('Pregnancy', '2.16.840.1.113883.3.526.3.378'),
        ('End Stage Renal Disease', '2.16.840.1.113883.3.526.3.353'),
        ('Kidney Transplant Recipient', '2.16.840.1.113883.3.464.1003.109.12.1029'),
        ('Chronic Kidney Disease, Stage 5', '2.16.840.1.113883.3.526.3.1002'),
        ('Kidney Transplant', '2.16.840.1.113883.3.464.1003.109.12.1012'),
        ('Dialysis Services', '2.16.840.1.113883.3.464.1003.109.12.1013'),
        ('ESRD Monthly Outpatient Services', '2.16.840.1.113883.3.464.1003.109.12.1014')
),
-- every (system, code) the measure matches a row's primary code against, named by value set or direct code
concept(concept, system, code) AS (
    SELECT m.concept, v.system, v.code
    FROM measure_valueset m
    JOIN valueset v ON v.valueset = 'http://cts.nlm.nih.gov/fhir/ValueSet/' || m.oid
    UNION ALL
    SELECT * FROM (VALUES
        ('Hospice care [Minimum Data Set]', 'http://loinc.org', '45755-6'),
        -- Functional Assessment of Chronic Illness Therapy - Palliative Care Questionnaire
        ('FACIT-Pal', 'http://loinc.org', '71007-9'),
        ('Medical equipment used', 'http://loinc.org', '98181-1'),
        ('Housing status', 'http://loinc.org', '71802-3')
    )
),
-- --------------------------------------------------------------------------------------------------- staging
-- patients with their age in completed years on the last day of the period (unknown birth date: null)
patients AS (
    SELECT
        patient_id,
        gender,
        year($period_end) - year(birth_date)
            - CASE
                WHEN month(birth_date) > month($period_end)
                    OR (month(birth_date) = month($period_end) AND day(birth_date) > day($period_end))
                THEN 1 ELSE 0
            END AS age
    FROM patient
),
-- coded rows: one per row and concept its primary code is in (any coding matches), with local dates
encounters AS MATERIALIZED (
    SELECT
        e.patient_id, e.id, c.concept, e.status, e.discharge_disposition, e.start, e."end",
        local_date(e.start, e.tz_offset_min) AS start_date,
        local_date(e."end", e.tz_offset_min) AS end_date
    FROM (
        SELECT
            patient_id, id, status, discharge_disposition, start, "end", tz_offset_min, unnest(type) AS coding
        FROM encounter
    ) e
    JOIN concept c ON c.system = e.coding.system AND c.code = e.coding.code
),
conditions AS MATERIALIZED (
    SELECT
        d.patient_id, d.id, c.concept, d.clinical_status, d.body_site, d.start, d."end",
        local_date(d.start, d.tz_offset_min) AS start_date,
        local_date(d."end", d.tz_offset_min) AS end_date
    FROM (
        SELECT patient_id, id, clinical_status, body_site, start, "end", tz_offset_min, unnest(code) AS coding
        FROM condition
    ) d
    JOIN concept c ON c.system = d.coding.system AND c.code = d.coding.code
),
procedures AS MATERIALIZED (
    SELECT
        p.patient_id, p.id, c.concept, p.status, p.start, p."end",
        local_date(p.start, p.tz_offset_min) AS start_date,
        local_date(p."end", p.tz_offset_min) AS end_date
    FROM (SELECT patient_id, id, status, start, "end", tz_offset_min, unnest(code) AS coding FROM procedure) p
    JOIN concept c ON c.system = p.coding.system AND c.code = p.coding.code
),
observations AS MATERIALIZED (
    SELECT
        o.patient_id, o.id, c.concept, o.status, o.category, o.value_concept, o.start, o."end",
        local_date(o.start, o.tz_offset_min) AS start_date,
        local_date(o."end", o.tz_offset_min) AS end_date
    FROM (
        SELECT
            patient_id, id, status, category, value_concept, start, "end", tz_offset_min,
            unnest(code) AS coding
        FROM observation
    ) o
    JOIN concept c ON c.system = o.coding.system AND c.code = o.coding.code
),
service_requests AS (
    SELECT
        s.patient_id, s.id, c.concept, s.status, s.intent,
        local_date(s.start, s.tz_offset_min) AS start_date,
        local_date(s."end", s.tz_offset_min) AS end_date
    FROM (
        SELECT patient_id, id, status, intent, start, "end", tz_offset_min, unnest(code) AS coding
        FROM service_request
    ) s
    JOIN concept c ON c.system = s.coding.system AND c.code = s.coding.code
),
device_requests AS (
    SELECT
        r.patient_id, r.id, c.concept, r.status, r.intent, r.do_not_perform,
        local_date(r.start, r.tz_offset_min) AS start_date,
        local_date(r."end", r.tz_offset_min) AS end_date
    FROM (
        SELECT
            patient_id, id, status, intent, do_not_perform, start, "end", tz_offset_min,
            unnest(code) AS coding
        FROM device_request
    ) r
    JOIN concept c ON c.system = r.coding.system AND c.code = r.coding.code
),
-- CumulativeMedicationDuration 4.1 medicationRequestPeriod(): the days a request's supply covers, as dates
medication_requests AS (
    SELECT
        patient_id, id, concept, status, intent, medication_id,
        CASE WHEN supply_last IS NOT NULL THEN supply_first END AS supply_first,
        supply_last
    FROM (
        SELECT
            *,
            CASE
                WHEN supply_first IS NOT NULL AND supply_days > 0
                    THEN supply_first + CAST(ceil(supply_days) - 1 AS INTEGER)
                WHEN supply_first IS NOT NULL AND bounds_end IS NOT NULL
                    THEN local_date(bounds_end, tz_offset_min)
            END AS supply_last
        FROM (
            SELECT
                m.patient_id, m.id, c.concept, m.status, m.intent, m.medication_id, m.bounds_end,
                m.tz_offset_min,
                -- start: boundsPeriod start, else authoredOn, else validityPeriod start
                local_date(
                    COALESCE(m.bounds_start, m.authored_on, m.validity_start), m.tz_offset_min
                ) AS supply_first,
                -- days: expected supply duration, else quantity / (dose x doses per day); times 1 + refills
                COALESCE(
                    m.expected_supply_days,
                    m.dispense_quantity / (m.dose_value * COALESCE(
                        CAST(COALESCE(m.timing_frequency_max, m.timing_frequency) AS DOUBLE)
                            / (m.timing_period * CASE m.timing_period_unit
                                WHEN 's' THEN 1 / 86400 WHEN 'min' THEN 1 / 1440 WHEN 'h' THEN 1 / 24
                                WHEN 'd' THEN 1.0 WHEN 'wk' THEN 7.0 WHEN 'mo' THEN 30.0 WHEN 'a' THEN 365.0
                            END),
                        CASE WHEN len(m.timing_times_of_day) > 0 THEN len(m.timing_times_of_day) END,
                        1.0
                    ))
                ) * (1 + COALESCE(m.refills, 0)) AS supply_days
            FROM (
                SELECT
                    patient_id, id, status, intent, medication_id, tz_offset_min, bounds_start, bounds_end,
                    authored_on, validity_start, expected_supply_days, dispense_quantity, dose_value,
                    timing_frequency, timing_frequency_max, timing_period, timing_period_unit,
                    timing_times_of_day, refills, unnest(medication) AS coding
                FROM medication_request
            ) m
            JOIN concept c ON c.system = m.coding.system AND c.code = m.coding.code
        )
    )
),
-- --------------------------------------------------------------------------------- AdultOutpatientEncounters
-- "Qualifying Encounters": performed, period during day of MP
qualifying_encounters AS (
    SELECT patient_id FROM encounters
    WHERE concept IN (
            'Office Visit', 'Annual Wellness Visit',
            'Preventive Care Services Established Office Visit, 18 and Up',
            'Preventive Care Services Initial Office Visit, 18 and Up',
            'Home Healthcare Services', 'Virtual Encounter', 'Telephone Visits')
        AND status IN ('finished', 'arrived', 'triaged', 'in-progress', 'onleave')
        AND start_date >= $period_start AND end_date <= $period_end
),
-- --------------------------------------------------------------------------------------------------- Hospice
-- "Has Hospice Services": any of six kinds of evidence in the period
hospice_services AS (
    -- inpatient encounter discharged to home / to a facility for hospice care, ending during day of MP
    SELECT patient_id FROM encounters
    WHERE concept = 'Encounter Inpatient'
        AND status IN ('finished', 'arrived', 'triaged', 'in-progress', 'onleave')
        AND (has_coding(discharge_disposition, 'http://snomed.info/sct', '428361000124107')
            OR has_coding(discharge_disposition, 'http://snomed.info/sct', '428371000124100'))
        AND end_date BETWEEN $period_start AND $period_end
    UNION ALL
    -- hospice encounter overlapping day of MP
    SELECT patient_id FROM encounters
    WHERE concept = 'Hospice Encounter'
        AND status IN ('finished', 'arrived', 'triaged', 'in-progress', 'onleave')
        AND (start IS NOT NULL OR "end" IS NOT NULL)
        AND (start IS NULL OR start_date <= $period_end) AND ("end" IS NULL OR end_date >= $period_start)
    UNION ALL
    -- hospice assessment (survey) answered Yes, overlapping day of MP
    SELECT patient_id FROM observations
    WHERE concept = 'Hospice care [Minimum Data Set]'
        AND status IN ('final', 'amended', 'corrected')
        AND has_coding(category, 'http://terminology.hl7.org/CodeSystem/observation-category', 'survey')
        AND has_coding(value_concept, 'http://snomed.info/sct', '373066001')
        AND (start IS NOT NULL OR "end" IS NOT NULL)
        AND (start IS NULL OR start_date <= $period_end) AND ("end" IS NULL OR end_date >= $period_start)
    UNION ALL
    -- hospice care order, during day of MP
    SELECT patient_id FROM service_requests
    WHERE concept = 'Hospice Care Ambulatory'
        AND status IN ('active', 'completed') AND intent = 'order'
        AND start_date >= $period_start AND end_date <= $period_end
    UNION ALL
    -- hospice care performed, overlapping day of MP
    SELECT patient_id FROM procedures
    WHERE concept = 'Hospice Care Ambulatory'
        AND status = 'completed'
        AND (start IS NOT NULL OR "end" IS NOT NULL)
        AND (start IS NULL OR start_date <= $period_end) AND ("end" IS NULL OR end_date >= $period_start)
    UNION ALL
    -- hospice diagnosis, prevalence overlapping day of MP
    SELECT patient_id FROM conditions
    WHERE concept = 'Hospice Diagnosis'
        AND (start IS NULL OR start_date <= $period_end)
        AND (end_date >= $period_start
            OR ("end" IS NULL AND clinical_status IN ('active', 'recurrence', 'relapse')))
),
-- -------------------------------------------------------------------------------------------- PalliativeCare
-- "Has Palliative Care in the Measurement Period"
palliative_care AS (
    -- FACIT-Pal assessment (survey), overlapping day of MP
    SELECT patient_id FROM observations
    WHERE concept = 'FACIT-Pal'
        AND status IN ('final', 'amended', 'corrected')
        AND has_coding(category, 'http://terminology.hl7.org/CodeSystem/observation-category', 'survey')
        AND (start IS NOT NULL OR "end" IS NOT NULL)
        AND (start IS NULL OR start_date <= $period_end) AND ("end" IS NULL OR end_date >= $period_start)
    UNION ALL
    -- palliative care diagnosis, prevalence overlapping day of MP
    SELECT patient_id FROM conditions
    WHERE concept = 'Palliative Care Diagnosis'
        AND (start IS NULL OR start_date <= $period_end)
        AND (end_date >= $period_start
            OR ("end" IS NULL AND clinical_status IN ('active', 'recurrence', 'relapse')))
    UNION ALL
    -- palliative care encounter, performed, overlapping day of MP
    SELECT patient_id FROM encounters
    WHERE concept = 'Palliative Care Encounter'
        AND status IN ('finished', 'arrived', 'triaged', 'in-progress', 'onleave')
        AND (start IS NOT NULL OR "end" IS NOT NULL)
        AND (start IS NULL OR start_date <= $period_end) AND ("end" IS NULL OR end_date >= $period_start)
    UNION ALL
    -- palliative care intervention, performed, overlapping day of MP
    SELECT patient_id FROM procedures
    WHERE concept = 'Palliative Care Intervention'
        AND status = 'completed'
        AND (start IS NOT NULL OR "end" IS NOT NULL)
        AND (start IS NULL OR start_date <= $period_end) AND ("end" IS NULL OR end_date >= $period_start)
),
-- --------------------------------------------------------------------------------- AdvancedIllnessandFrailty
-- "Has Criteria Indicating Frailty"
frailty AS (
    -- frailty device ordered (not "do not perform"), during day of MP
    SELECT patient_id FROM device_requests
    WHERE concept = 'Frailty Device'
        AND status IN ('active', 'completed') AND intent = 'order'
        AND NOT COALESCE(do_not_perform, false)
        AND start_date >= $period_start AND end_date <= $period_end
    UNION ALL
    -- medical equipment used (survey) answered with a frailty device, ending during day of MP
    SELECT o.patient_id FROM observations o
    WHERE o.concept = 'Medical equipment used'
        AND o.status IN ('final', 'amended', 'corrected')
        AND has_coding(o.category, 'http://terminology.hl7.org/CodeSystem/observation-category', 'survey')
        AND EXISTS (
            SELECT 1 FROM (SELECT unnest(o.value_concept) AS v) answer
            JOIN concept fd
                ON fd.concept = 'Frailty Device' AND fd.system = answer.v.system AND fd.code = answer.v.code
        )
        AND o.end_date BETWEEN $period_start AND $period_end
    UNION ALL
    -- frailty diagnosis, prevalence overlapping day of MP
    SELECT patient_id FROM conditions
    WHERE concept = 'Frailty Diagnosis'
        AND (start IS NULL OR start_date <= $period_end)
        AND (end_date >= $period_start
            OR ("end" IS NULL AND clinical_status IN ('active', 'recurrence', 'relapse')))
    UNION ALL
    -- frailty encounter, performed, overlapping day of MP
    SELECT patient_id FROM encounters
    WHERE concept = 'Frailty Encounter'
        AND status IN ('finished', 'arrived', 'triaged', 'in-progress', 'onleave')
        AND (start IS NOT NULL OR "end" IS NOT NULL)
        AND (start IS NULL OR start_date <= $period_end) AND ("end" IS NULL OR end_date >= $period_start)
    UNION ALL
    -- frailty symptom, overlapping day of MP
    SELECT patient_id FROM observations
    WHERE concept = 'Frailty Symptom'
        AND status IN ('preliminary', 'final', 'amended', 'corrected')
        AND (start IS NOT NULL OR "end" IS NOT NULL)
        AND (start IS NULL OR start_date <= $period_end) AND ("end" IS NULL OR end_date >= $period_start)
),
-- "Has Advanced Illness in Year Before or During Measurement Period": starts during day of
-- [MP start - 1 year, MP end]
advanced_illness AS (
    SELECT patient_id FROM conditions
    WHERE concept = 'Advanced Illness'
        AND start_date BETWEEN CAST($period_start - INTERVAL 1 YEAR AS DATE) AND $period_end
),
-- "Has Dementia Medications in Year Before or During Measurement Period": an active order (medication coded
-- inline, not by reference) whose supply period overlaps day of [MP start - 1 year, MP end]
dementia_medications AS (
    SELECT patient_id FROM medication_requests
    WHERE concept = 'Dementia Medications'
        AND status = 'active' AND intent = 'order'
        AND medication_id IS NULL
        AND supply_first IS NOT NULL AND supply_last IS NOT NULL  -- (greatest and least skip nulls)
        AND greatest(supply_first, CAST($period_start - INTERVAL 1 YEAR AS DATE))
            <= least(supply_last, $period_end)
),
-- "Is Age 66 or Older Living Long Term in a Nursing Home": the latest housing status (survey) ending on or
-- before day of MP end (by end, ties by id) is "Lives in a nursing home"
latest_housing_status AS (
    SELECT patient_id, value_concept FROM observations
    WHERE concept = 'Housing status'
        AND status IN ('final', 'amended', 'corrected')
        AND has_coding(category, 'http://terminology.hl7.org/CodeSystem/observation-category', 'survey')
        AND end_date <= $period_end
    QUALIFY row_number() OVER (PARTITION BY patient_id ORDER BY "end" DESC NULLS LAST, id DESC) = 1
),
nursing_home AS (
    SELECT patient_id FROM latest_housing_status
    WHERE has_coding(value_concept, 'http://snomed.info/sct', '160734000')
),
-- ---------------------------------------------------------------------------------------------------- CMS165
-- "Essential Hypertension Diagnosis": prevalence overlapping [start of MP, start of MP + 6 months)
essential_hypertension AS (
    SELECT patient_id FROM conditions
    WHERE concept = 'Essential Hypertension'
        AND (start IS NULL OR start < CAST($period_start + INTERVAL 6 MONTH AS TIMESTAMPTZ))
        AND ("end" >= CAST($period_start AS TIMESTAMPTZ)
            OR ("end" IS NULL AND clinical_status IN ('active', 'recurrence', 'relapse')))
),
-- "Pregnancy or Renal Diagnosis": prevalence overlapping MP
pregnancy_or_renal_diagnosis AS (
    SELECT patient_id FROM conditions
    WHERE concept IN (
            'Pregnancy', 'End Stage Renal Disease', 'Kidney Transplant Recipient',
            'Chronic Kidney Disease, Stage 5')
        AND (start IS NULL OR start < CAST($period_end + 1 AS TIMESTAMPTZ))
        AND ("end" >= CAST($period_start AS TIMESTAMPTZ)
            OR ("end" IS NULL AND clinical_status IN ('active', 'recurrence', 'relapse')))
),
-- "End Stage Renal Disease Procedures": performed, ending on or before end of MP
end_stage_renal_disease_procedures AS (
    SELECT patient_id FROM procedures
    WHERE concept IN ('Kidney Transplant', 'Dialysis Services')
        AND status = 'completed'
        AND "end" < CAST($period_end + 1 AS TIMESTAMPTZ)
),
-- "End Stage Renal Disease Encounter": performed, starting on or before end of MP
end_stage_renal_disease_encounter AS (
    SELECT patient_id FROM encounters
    WHERE concept = 'ESRD Monthly Outpatient Services'
        AND status IN ('finished', 'arrived', 'triaged', 'in-progress', 'onleave')
        AND (start IS NOT NULL OR "end" IS NOT NULL)
        AND (start IS NULL OR start < CAST($period_end + 1 AS TIMESTAMPTZ))
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
        AND o.status IN ('final', 'amended', 'corrected')
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
-- "Lowest Systolic Reading on Most Recent Blood Pressure Day": sorted ascending (unknown first), ties by id
lowest_systolic AS (
    SELECT r.patient_id, s.mm_hg
    FROM blood_pressure_on_most_recent_day r
    LEFT JOIN blood_pressure_component s
        ON s.patient_id = r.patient_id AND s.observation_id = r.id AND s.kind = 'systolic'
    QUALIFY row_number() OVER (PARTITION BY r.patient_id ORDER BY s.mm_hg ASC NULLS FIRST, r.id ASC) = 1
),
-- "Lowest Diastolic Reading on Most Recent Blood Pressure Day"
lowest_diastolic AS (
    SELECT r.patient_id, d.mm_hg
    FROM blood_pressure_on_most_recent_day r
    LEFT JOIN blood_pressure_component d
        ON d.patient_id = r.patient_id AND d.observation_id = r.id AND d.kind = 'diastolic'
    QUALIFY row_number() OVER (PARTITION BY r.patient_id ORDER BY d.mm_hg ASC NULLS FIRST, r.id ASC) = 1
),
-- -------------------------------------------------------------------------------------------------- criteria
criteria AS (
    SELECT
        p.patient_id,
        COALESCE(
            p.age BETWEEN 18 AND 85
            AND p.patient_id IN (SELECT patient_id FROM essential_hypertension)
            AND p.patient_id IN (SELECT patient_id FROM qualifying_encounters),
            false
        ) AS initial_population,
        COALESCE(
            p.patient_id IN (SELECT patient_id FROM hospice_services)
            OR p.patient_id IN (SELECT patient_id FROM pregnancy_or_renal_diagnosis)
            OR p.patient_id IN (SELECT patient_id FROM end_stage_renal_disease_procedures)
            OR p.patient_id IN (SELECT patient_id FROM end_stage_renal_disease_encounter)
            -- "Is Age 66 to 80 with Advanced Illness and Frailty or Is Age 81 or Older with Frailty"
            OR (p.age BETWEEN 66 AND 80
                AND p.patient_id IN (SELECT patient_id FROM frailty)
                AND (p.patient_id IN (SELECT patient_id FROM advanced_illness)
                    OR p.patient_id IN (SELECT patient_id FROM dementia_medications)))
            OR (p.age >= 81 AND p.patient_id IN (SELECT patient_id FROM frailty))
            -- "Is Age 66 or Older Living Long Term in a Nursing Home"
            OR (p.age >= 66 AND p.patient_id IN (SELECT patient_id FROM nursing_home))
            OR p.patient_id IN (SELECT patient_id FROM palliative_care),
            false
        ) AS exclusion,
        COALESCE(
            -- "Has Systolic Blood Pressure Less Than 140" and "Has Diastolic Blood Pressure Less Than 90"
            p.patient_id IN (SELECT patient_id FROM lowest_systolic WHERE mm_hg < 140)
            AND p.patient_id IN (SELECT patient_id FROM lowest_diastolic WHERE mm_hg < 90),
            false
        ) AS numerator
    FROM patients p
)
-- proportion cascade: denominator = initial population; numerator only for denominator members not excluded
SELECT
    patient_id,
    initial_population,
    initial_population AS denominator,
    initial_population AND exclusion AS denominator_exclusion,
    initial_population AND NOT exclusion AND numerator AS numerator
FROM criteria
ORDER BY patient_id
