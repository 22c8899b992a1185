-- The shared models of the measure mart of benchmarks/sql/, written once: the concept dimension, the staging views
-- (each table's rows unnested by coding and joined to the concepts, with local dates), the interval predicates,
-- and the definitions of the libraries the measures include (AdultOutpatientEncounters, Hospice, PalliativeCare,
-- AdvancedIllnessandFrailty, CumulativeMedicationDuration's request period) as table macros of the period.
--
-- benchmarks/duckdb_peer.py runs this once per connection, after session.sql, the lake views and the valueset
-- table (DuckDB checks that the tables a view or macro reads exist when it is created). It holds no period: a
-- measure query (cms122.sql, cms125.sql, cms165.sql) passes its prepared parameters $period_start and
-- $period_end (DATE: the measurement period, both days included, in UTC) to the macros, e.g.
-- hospice_services($period_start, $period_end). Views and macros are expanded into the measure's query: nothing
-- is computed here, and each measure is still one query from the Parquet files.
--
-- Time, as in docs/definition-language.md section 4 (and the same in every measure of benchmarks/sql/):
-- * a row's local date is the calendar date of its instant in its recorded offset (tz_offset_min, UTC when
--   null); "during day of" / "overlaps day of" compare those dates with the period's dates;
-- * instants compare at millisecond precision, so "on or before end of MP" (23:59:59.999) is "before the
--   midnight that follows the period";
-- * a null start is the beginning of time and a null end the end of time (CQL closed null boundaries); both
--   null: unknown, the row never qualifies; prevalenceInterval() ends at the end of time for an active,
--   recurring or relapsing condition without an end, and is unknown for any other condition without one.

-- ------------------------------------------------------------------------------------------------- concepts
-- the value sets the measures (and their libraries) read, by name and VSAC OID
CREATE OR REPLACE VIEW concept_valueset(concept, oid) AS
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
        -- CMS122: DiabetesGlycemicStatusAssessmentGreaterThan9PercentFHIR 0.1.002
        ('Diabetes', '2.16.840.1.113883.3.464.1003.103.12.1001'),
        ('HbA1c Laboratory Test', '2.16.840.1.113883.3.464.1003.198.12.1013'),
        -- CMS125: BreastCancerScreeningFHIR 0.0.001
        ('Bilateral Mastectomy', '2.16.840.1.113883.3.464.1003.198.12.1005'),
        ('History of bilateral mastectomy', '2.16.840.1.113883.3.464.1003.198.12.1068'),
        ('Mammography', '2.16.840.1.113883.3.464.1003.108.12.1018'),
        ('Status Post Left Mastectomy', '2.16.840.1.113883.3.464.1003.198.12.1069'),
        ('Status Post Right Mastectomy', '2.16.840.1.113883.3.464.1003.198.12.1070'),
        ('Unilateral Mastectomy Left', '2.16.840.1.113883.3.464.1003.198.12.1133'),
        ('Unilateral Mastectomy Right', '2.16.840.1.113883.3.464.1003.198.12.1134'),
        ('Unilateral Mastectomy, Unspecified Laterality', '2.16.840.1.113883.3.464.1003.198.12.1071'),
        -- CMS165: ControllingHighBloodPressureFHIR 0.1.000
        ('Essential Hypertension', '2.16.840.1.113883.3.464.1003.104.12.1011'),
        ('Pregnancy', '2.16.840.1.113883.3.526.3.378'),
        ('End Stage Renal Disease', '2.16.840.1.113883.3.526.3.353'),
        ('Kidney Transplant Recipient', '2.16.840.1.113883.3.464.1003.109.12.1029'),
        ('Chronic Kidney Disease, Stage 5', '2.16.840.1.113883.3.526.3.1002'),
        ('Kidney Transplant', '2.16.840.1.113883.3.464.1003.109.12.1012'),
        ('Dialysis Services', '2.16.840.1.113883.3.464.1003.109.12.1013'),
        ('ESRD Monthly Outpatient Services', '2.16.840.1.113883.3.464.1003.109.12.1014');

-- every (system, code) a row's primary code is matched against, named by value set or direct code (the names
-- do not collide across measures, so one dimension serves them all)
CREATE OR REPLACE VIEW concept(concept, system, code) AS
    SELECT m.concept, v.system, v.code
    FROM concept_valueset m
    JOIN valueset v ON v.valueset = 'http://cts.nlm.nih.gov/fhir/ValueSet/' || m.oid
    UNION ALL
    SELECT * FROM (VALUES
        ('Hospice care [Minimum Data Set]', 'http://loinc.org', '45755-6'),
        -- Functional Assessment of Chronic Illness Therapy - Palliative Care Questionnaire
        ('FACIT-Pal', 'http://loinc.org', '71007-9'),
        ('Medical equipment used', 'http://loinc.org', '98181-1'),
        ('Housing status', 'http://loinc.org', '71802-3'),
        ('Glucose management indicator', 'http://loinc.org', '97506-0')
    );

-- ------------------------------------------------------------------------------------------------ predicates
-- "during day of [first, last]": the row's interval of local dates lies within the days (unknown: false)
CREATE OR REPLACE MACRO during_days(start_date, end_date, first_day, last_day) AS
    start_date >= first_day AND end_date <= last_day;

-- "overlaps day of [first, last]": a null start or end is open; both null is unknown (false)
CREATE OR REPLACE MACRO overlaps_days(start_date, end_date, first_day, last_day) AS
    (start_date IS NOT NULL OR end_date IS NOT NULL)
    AND (start_date IS NULL OR start_date <= last_day) AND (end_date IS NULL OR end_date >= first_day);

-- prevalenceInterval() overlaps [low, high): a null start is open; a null end is the end of time for an active,
-- recurring or relapsing condition, unknown otherwise. On instants, or on local dates with high = last day + 1.
CREATE OR REPLACE MACRO prevalence_overlaps(lo, hi, clinical_status, low, high) AS
    (lo IS NULL OR lo < high)
    AND (hi >= low OR (hi IS NULL AND clinical_status IN ('active', 'recurrence', 'relapse')));

-- "on or before end of MP" for an instant: before the midnight that follows the period's last day
CREATE OR REPLACE MACRO before_end_of(instant, last_day) AS instant < CAST(last_day + 1 AS TIMESTAMPTZ);

-- "starts on or before end of MP" for an interval of instants: a null start is open; start and end both null is
-- unknown (false)
CREATE OR REPLACE MACRO starts_by_end_of(start, "end", last_day) AS
    (start IS NOT NULL OR "end" IS NOT NULL) AND (start IS NULL OR before_end_of(start, last_day));

-- the status sets of the QICore profiles the libraries use
CREATE OR REPLACE MACRO encounter_performed(status) AS
    status IN ('finished', 'arrived', 'triaged', 'in-progress', 'onleave');
CREATE OR REPLACE MACRO observation_final(status) AS status IN ('final', 'amended', 'corrected');
CREATE OR REPLACE MACRO is_survey(category) AS
    has_coding(category, 'http://terminology.hl7.org/CodeSystem/observation-category', 'survey');

-- -------------------------------------------------------------------------------------------------- staging
-- patients with their age in completed years on the period's last day (unknown birth date: null)
CREATE OR REPLACE MACRO patients(last_day) AS TABLE
    SELECT
        patient_id,
        gender,
        year(last_day) - year(birth_date)
            - CASE
                WHEN month(birth_date) > month(last_day)
                    OR (month(birth_date) = month(last_day) AND day(birth_date) > day(last_day))
                THEN 1 ELSE 0
            END AS age
    FROM patient;

-- coded rows of a lake table: one per row and concept a coding of its codes column is in (any coding matches),
-- with the columns kept, start and end, and their local dates
CREATE OR REPLACE MACRO coded(source, codes, keep) AS TABLE
    SELECT
        r.* EXCLUDE (coding, tz_offset_min), c.concept,
        local_date(r.start, r.tz_offset_min) AS start_date,
        local_date(r."end", r.tz_offset_min) AS end_date
    FROM (
        SELECT
            COLUMNS(k -> list_contains(keep || ['start', 'end', 'tz_offset_min'], k)),
            unnest(COLUMNS(k -> k = codes)) AS coding
        FROM query_table(source)
    ) r
    JOIN concept c ON c.system = r.coding.system AND c.code = r.coding.code;

-- the staging views: the coded rows the measures and libraries read, by primary code. A table macro binds the
-- names it reads where it is called, a CTE of the calling query first: each measure query declares
-- `encounters AS MATERIALIZED (FROM encounters)` (and conditions, procedures, observations), so that it and every
-- macro it calls read one copy and each of these tables is scanned once. Without those CTEs the macros read the
-- views themselves: the same rows, scanned once per use.
CREATE OR REPLACE VIEW encounters AS
    FROM coded('encounter', 'type', ['patient_id', 'id', 'status', 'discharge_disposition']);
CREATE OR REPLACE VIEW conditions AS
    FROM coded('condition', 'code', ['patient_id', 'id', 'clinical_status', 'body_site']);
CREATE OR REPLACE VIEW procedures AS FROM coded('procedure', 'code', ['patient_id', 'id', 'status']);
CREATE OR REPLACE VIEW observations AS
    SELECT
        *,
        -- latest(): the end of effective, else its start
        COALESCE(end_date, start_date) AS latest_date
    FROM coded(
        'observation', 'code',
        ['patient_id', 'id', 'status', 'category', 'value_concept', 'value_type', 'value_quantity', 'value_unit']
    );
-- orders: service requests (hospice care) and device requests (frailty devices), told apart by resource
CREATE OR REPLACE VIEW requests AS
    SELECT 'ServiceRequest' AS resource, *, NULL::BOOLEAN AS do_not_perform
    FROM coded('service_request', 'code', ['patient_id', 'id', 'status', 'intent'])
    UNION ALL BY NAME
    SELECT 'DeviceRequest' AS resource, *
    FROM coded('device_request', 'code', ['patient_id', 'id', 'status', 'intent', 'do_not_perform']);

-- CumulativeMedicationDuration 4.1 medicationRequestPeriod(): the days a request's supply covers, as dates
CREATE OR REPLACE VIEW medication_requests AS
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
    );

-- --------------------------------------------------------------------------------------------------- evidence
-- the kinds of evidence of one concept the libraries (and measures) look for in the period, by concept name
-- a diagnosis: prevalence overlapping day of MP
CREATE OR REPLACE MACRO diagnosis_in(of_concept, period_start, period_end) AS TABLE
    SELECT patient_id FROM conditions
    WHERE concept = of_concept
        AND prevalence_overlaps(start_date, end_date, clinical_status, period_start, period_end + 1);

-- an encounter, performed, overlapping day of MP
CREATE OR REPLACE MACRO encounter_in(of_concept, period_start, period_end) AS TABLE
    SELECT patient_id FROM encounters
    WHERE concept = of_concept
        AND encounter_performed(status)
        AND overlaps_days(start_date, end_date, period_start, period_end);

-- a procedure (intervention), performed, overlapping day of MP
CREATE OR REPLACE MACRO procedure_in(of_concept, period_start, period_end) AS TABLE
    SELECT patient_id FROM procedures
    WHERE concept = of_concept
        AND status = 'completed'
        AND overlaps_days(start_date, end_date, period_start, period_end);

-- an assessment (survey observation), final, overlapping day of MP, with its answer
CREATE OR REPLACE MACRO survey_in(of_concept, period_start, period_end) AS TABLE
    SELECT patient_id, value_concept FROM observations
    WHERE concept = of_concept
        AND observation_final(status) AND is_survey(category)
        AND overlaps_days(start_date, end_date, period_start, period_end);

-- an order (service or device request), active or completed, during day of MP
CREATE OR REPLACE MACRO order_in(of_resource, of_concept, period_start, period_end) AS TABLE
    SELECT patient_id, do_not_perform FROM requests
    WHERE resource = of_resource AND concept = of_concept
        AND status IN ('active', 'completed') AND intent = 'order'
        AND during_days(start_date, end_date, period_start, period_end);

-- -------------------------------------------------------------------------------- AdultOutpatientEncounters
-- "Qualifying Encounters": performed, period during day of MP
CREATE OR REPLACE MACRO qualifying_encounters(period_start, period_end) AS TABLE
    SELECT patient_id FROM encounters
    WHERE concept IN (
            'Office Visit', 'Annual Wellness Visit',
            'Preventive Care Services Established Office Visit, 18 and Up',
            'Preventive Care Services Initial Office Visit, 18 and Up',
            'Home Healthcare Services', 'Virtual Encounter', 'Telephone Visits')
        AND encounter_performed(status)
        AND during_days(start_date, end_date, period_start, period_end);

-- -------------------------------------------------------------------------------------------------- Hospice
-- "Has Hospice Services": any of six kinds of evidence in the period
CREATE OR REPLACE MACRO hospice_services(period_start, period_end) AS TABLE
    -- inpatient encounter discharged to home / to a facility for hospice care, ending during day of MP
    SELECT patient_id FROM encounters
    WHERE concept = 'Encounter Inpatient'
        AND encounter_performed(status)
        AND (has_coding(discharge_disposition, 'http://snomed.info/sct', '428361000124107')
            OR has_coding(discharge_disposition, 'http://snomed.info/sct', '428371000124100'))
        AND end_date BETWEEN period_start AND period_end
    UNION ALL
    SELECT patient_id FROM encounter_in('Hospice Encounter', period_start, period_end)
    UNION ALL
    -- hospice assessment answered Yes
    SELECT patient_id FROM survey_in('Hospice care [Minimum Data Set]', period_start, period_end)
    WHERE has_coding(value_concept, 'http://snomed.info/sct', '373066001')
    UNION ALL
    SELECT patient_id FROM order_in('ServiceRequest', 'Hospice Care Ambulatory', period_start, period_end)
    UNION ALL
    SELECT patient_id FROM procedure_in('Hospice Care Ambulatory', period_start, period_end)
    UNION ALL
    SELECT patient_id FROM diagnosis_in('Hospice Diagnosis', period_start, period_end);

-- ------------------------------------------------------------------------------------------- PalliativeCare
-- "Has Palliative Care in the Measurement Period"
CREATE OR REPLACE MACRO palliative_care(period_start, period_end) AS TABLE
    -- Functional Assessment of Chronic Illness Therapy - Palliative Care Questionnaire, any answer
    SELECT patient_id FROM survey_in('FACIT-Pal', period_start, period_end)
    UNION ALL
    SELECT patient_id FROM diagnosis_in('Palliative Care Diagnosis', period_start, period_end)
    UNION ALL
    SELECT patient_id FROM encounter_in('Palliative Care Encounter', period_start, period_end)
    UNION ALL
    SELECT patient_id FROM procedure_in('Palliative Care Intervention', period_start, period_end);

-- -------------------------------------------------------------------------------- AdvancedIllnessandFrailty
-- "Has Criteria Indicating Frailty"
CREATE OR REPLACE MACRO frailty(period_start, period_end) AS TABLE
    -- frailty device ordered, not "do not perform"
    SELECT patient_id FROM order_in('DeviceRequest', 'Frailty Device', period_start, period_end)
    WHERE NOT COALESCE(do_not_perform, false)
    UNION ALL
    -- medical equipment used (survey) answered with a frailty device, ending during day of MP
    SELECT o.patient_id FROM observations o
    WHERE o.concept = 'Medical equipment used'
        AND observation_final(o.status) AND is_survey(o.category)
        AND EXISTS (
            SELECT 1 FROM (SELECT unnest(o.value_concept) AS v) answer
            JOIN concept fd
                ON fd.concept = 'Frailty Device' AND fd.system = answer.v.system AND fd.code = answer.v.code
        )
        AND o.end_date BETWEEN period_start AND period_end
    UNION ALL
    SELECT patient_id FROM diagnosis_in('Frailty Diagnosis', period_start, period_end)
    UNION ALL
    SELECT patient_id FROM encounter_in('Frailty Encounter', period_start, period_end)
    UNION ALL
    -- frailty symptom, preliminary or final, overlapping day of MP
    SELECT patient_id FROM observations
    WHERE concept = 'Frailty Symptom'
        AND status IN ('preliminary', 'final', 'amended', 'corrected')
        AND overlaps_days(start_date, end_date, period_start, period_end);

-- "Has Advanced Illness in Year Before or During Measurement Period": starts during day of
-- [MP start - 1 year, MP end]; or "Has Dementia Medications in Year Before or During Measurement Period": an
-- active order (medication coded inline, not by reference) whose supply period overlaps day of that window
CREATE OR REPLACE MACRO advanced_illness_or_dementia_medications(period_start, period_end) AS TABLE
    SELECT patient_id FROM conditions
    WHERE concept = 'Advanced Illness'
        AND start_date BETWEEN CAST(period_start - INTERVAL 1 YEAR AS DATE) AND period_end
    UNION ALL
    SELECT patient_id FROM medication_requests
    WHERE concept = 'Dementia Medications'
        AND status = 'active' AND intent = 'order'
        AND medication_id IS NULL
        AND supply_first IS NOT NULL AND supply_last IS NOT NULL  -- (greatest and least skip nulls)
        AND greatest(supply_first, CAST(period_start - INTERVAL 1 YEAR AS DATE))
            <= least(supply_last, period_end);

-- "Is Age 66 or Older Living Long Term in a Nursing Home" (less the age): the latest housing status (survey)
-- ending on or before day of MP end (by end, ties by id) is "Lives in a nursing home"
CREATE OR REPLACE MACRO nursing_home(period_end) AS TABLE
    SELECT patient_id FROM (
        SELECT patient_id, value_concept FROM observations
        WHERE concept = 'Housing status'
            AND observation_final(status) AND is_survey(category)
            AND end_date <= period_end
        QUALIFY row_number() OVER (PARTITION BY patient_id ORDER BY "end" DESC NULLS LAST, id DESC) = 1
    )
    WHERE has_coding(value_concept, 'http://snomed.info/sct', '160734000');

-- --------------------------------------------------------------------------------------------------- result
-- the populations of a proportion measure from its criteria: denominator = initial population; numerator only
-- for denominator members not excluded (an unknown criterion is false)
CREATE OR REPLACE MACRO proportion_cascade(ip, exclusion, numerator) AS {
    'initial_population': ip,
    'denominator': ip,
    'denominator_exclusion': ip AND exclusion,
    'numerator': ip AND NOT exclusion AND numerator
};
CREATE OR REPLACE MACRO proportion(initial_population, exclusion, numerator) AS
    proportion_cascade(
        COALESCE(initial_population, false), COALESCE(exclusion, false), COALESCE(numerator, false)
    );
