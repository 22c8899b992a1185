"""The synthetic world as data: who has what, when, with which statuses and values.

Each :class:`Rule` adds events to one table for the patients it selects (sex, age band, an earlier rule's
selection, a probability), with codes drawn from one of the project's synthetic value sets (by name), a
timing window relative to the measurement period, a status mix and an optional value distribution. The
prevalences are tuned so that the library measures land in realistic ranges (about 50-80 % screening,
15-35 % poor HbA1c control among diabetics, 50-70 % controlled blood pressure among hypertensives).
Changing the world means editing this table, not the generator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Measurement-period-relative windows, in days from January 1 of the period year.
PERIOD = (0, 364)
PRIOR_YEAR = (-365, -1)
FIRST_HALF = (0, 180)
LAST_27_MONTHS = (-457, 364)  # mammography: October 1 two years before the period through its end
LAST_10_YEARS = (-3285, 364)
LAST_5_YEARS = (-1460, 364)
LAST_3_YEARS = (-730, 364)
CHRONIC_ONSET = (-3650, 150)  # diagnosed before or early in the period (CMS165: overlaps its first 6 months)

# Age at the end of the period: (lower bound of band, share of the population); a band ends where the next one
# starts, the last at 95. Roughly the US census pyramid.
AGE_BANDS: tuple[tuple[int, float], ...] = (
    (0, 0.060),
    (5, 0.160),
    (18, 0.090),
    (25, 0.135),
    (35, 0.130),
    (45, 0.120),
    (55, 0.125),
    (65, 0.100),
    (75, 0.055),
    (85, 0.025),
)
MAX_AGE = 95
FEMALE_SHARE = 0.51
DECEASED_SHARE = 0.004

# (OMB code, display, share); CDC Race & Ethnicity system.
RACES: tuple[tuple[str, str, float], ...] = (
    ("2106-3", "White", 0.60),
    ("2054-5", "Black or African American", 0.13),
    ("2028-9", "Asian", 0.06),
    ("1002-5", "American Indian or Alaska Native", 0.01),
    ("2076-8", "Native Hawaiian or Other Pacific Islander", 0.005),
    ("2131-1", "Other Race", 0.195),
)
ETHNICITIES: tuple[tuple[str, str, float], ...] = (
    ("2135-2", "Hispanic or Latino", 0.19),
    ("2186-5", "Not Hispanic or Latino", 0.81),
)
STATES: tuple[tuple[str, str, float], ...] = (
    ("CA", "90", 0.25),
    ("TX", "75", 0.18),
    ("NY", "10", 0.15),
    ("FL", "33", 0.14),
    ("MA", "02", 0.08),
    ("IL", "60", 0.10),
    ("WA", "98", 0.10),
)

# Payer (Source of Payment Typology code, display, payor name) and its mix per age band (lower bound).
PAYERS: tuple[tuple[str, str, str], ...] = (
    ("1", "MEDICARE", "Medicare"),
    ("2", "MEDICAID", "Medicaid"),
    ("5", "PRIVATE HEALTH INSURANCE", "Synthetic Health Plan"),
    ("81", "Self-pay (Includes applicants for insurance and Medicaid applicants)", "Self-pay"),
)
PAYER_MIX: tuple[tuple[int, tuple[float, ...]], ...] = (
    (0, (0.00, 0.40, 0.55, 0.05)),
    (18, (0.02, 0.20, 0.68, 0.10)),
    (65, (0.88, 0.05, 0.06, 0.01)),
)

# Offsets (minutes) written on the few records that carry a non-UTC offset; instants stay UTC.
TZ_OFFSETS: tuple[int, ...] = (-300, -360, -420, -480, -240, 60)

# Rates of the hard cases injected into every event table (data-model pitfalls P3, P5, P7, P1).
PARTIAL_DATE_RATE = 0.02  # year or month precision (condition, procedure, immunization)
SECOND_CODING_RATE = 0.03  # a second coding from another system of the same value set
OFFSET_RATE = 0.03  # a non-zero tz_offset_min
DUPLICATE_RATE = 0.01  # the same resource again under another id

# Fixed codes that are not value-set members (profiles, panel codes, vaccines).
BP_PANEL = ("http://loinc.org", "85354-9", "Blood pressure panel with all children optional")
BP_SYSTOLIC = ("http://loinc.org", "8480-6", "Systolic blood pressure")
BP_DIASTOLIC = ("http://loinc.org", "8462-4", "Diastolic blood pressure")
BP_PROFILE = "http://hl7.org/fhir/StructureDefinition/bp"
VACCINES: tuple[tuple[str, str, str], ...] = (
    ("http://hl7.org/fhir/sid/cvx", "140", "Influenza, seasonal, injectable, preservative free"),
    ("http://hl7.org/fhir/sid/cvx", "150", "Influenza, injectable, quadrivalent, preservative free"),
    ("http://hl7.org/fhir/sid/cvx", "208", "COVID-19, mRNA, LNP-S, PF, 30 mcg/0.3 mL dose"),
)


@dataclass(frozen=True)
class Rule:
    """Events of one kind: ``prob`` of the selected patients get ``1 + Poisson(extra)`` events in ``window``.

    ``prob`` is a constant or a step function of age ``((age_from, p), ...)``. ``given`` names an earlier rule
    whose patients are eligible (``"!key"``: those it did not select). ``status`` is a mix ``((status, w),
    ...)``; ``negated`` is the share recorded as not done / not requested, with a reason from ``reason``.
    """

    key: str
    table: str
    valueset: str
    prob: float | tuple[tuple[int, float], ...]
    window: tuple[int, int] = PERIOD
    ages: tuple[int, int] = (0, MAX_AGE)
    sex: str | None = None
    given: str | None = None
    extra: float = 0.0
    status: tuple[tuple[str, float], ...] = ()
    negated: float = 0.0
    reason: str = "Medical Reason"
    value: tuple[float, float, float, float] | None = None  # mean, sd, low clip, high clip
    unit: str | None = None
    decimals: int = 1
    value_valueset: str | None = None
    category: str | None = None
    kind: str = ""  # encounter: class code; observation "bp": a blood-pressure panel with components
    minutes: tuple[int, int] = (20, 40)
    bp: tuple[float, float, float, float] = field(
        default=(120.0, 12.0, 76.0, 8.0)
    )  # sys mean/sd, dia mean/sd


E_FIN = (("finished", 0.985), ("cancelled", 0.01), ("in-progress", 0.005))
P_DONE = (("completed", 0.99), ("in-progress", 0.005), ("entered-in-error", 0.005))
O_FINAL = (
    ("final", 0.95),
    ("amended", 0.02),
    ("corrected", 0.01),
    ("preliminary", 0.015),
    ("cancelled", 0.005),
)
M_ORDER = (("active", 0.6), ("completed", 0.33), ("stopped", 0.05), ("on-hold", 0.02))
C_ACTIVE = (("active", 0.95), ("recurrence", 0.01), ("resolved", 0.04))
ADULT = (18, MAX_AGE)
OLDER = (66, MAX_AGE)

WORLD: tuple[Rule, ...] = (
    # encounters (qualifying visits)
    Rule("office", "encounter", "Office Visit", 0.80, ages=ADULT, extra=1.2, status=E_FIN, kind="AMB"),
    Rule("office_prior", "encounter", "Office Visit", 0.55, PRIOR_YEAR, ADULT, status=E_FIN, kind="AMB"),
    Rule(
        "wellness", "encounter", "Annual Wellness Visit", 0.45, ages=(65, MAX_AGE), status=E_FIN, kind="AMB"
    ),
    Rule(
        "preventive_adult",
        "encounter",
        "Preventive Care Services Established Office Visit, 18 and Up",
        0.25,
        ages=(18, 64),
        status=E_FIN,
        kind="AMB",
    ),
    Rule(
        "preventive_child",
        "encounter",
        "Preventive Care, Established Office Visit, 0 to 17",
        0.70,
        ages=(0, 17),
        status=E_FIN,
        kind="AMB",
    ),
    Rule(
        "telephone",
        "encounter",
        "Telephone Visits",
        0.08,
        ages=ADULT,
        status=E_FIN,
        kind="VR",
        minutes=(5, 15),
    ),
    Rule(
        "virtual",
        "encounter",
        "Virtual Encounter",
        0.06,
        ages=ADULT,
        status=E_FIN,
        kind="VR",
        minutes=(5, 15),
    ),
    Rule(
        "home_health",
        "encounter",
        "Home Healthcare Services",
        0.03,
        ages=(75, MAX_AGE),
        status=E_FIN,
        kind="HH",
    ),
    Rule(
        "ed",
        "encounter",
        "Emergency Department Evaluation and Management Visit",
        0.12,
        status=E_FIN,
        kind="EMER",
        minutes=(90, 420),
    ),
    Rule(
        "inpatient",
        "encounter",
        "Encounter Inpatient",
        ((0, 0.02), (45, 0.05), (65, 0.10)),
        status=E_FIN,
        kind="IMP",
        minutes=(1440, 8640),
    ),
    Rule(
        "depression_enc",
        "encounter",
        "Encounter to Screen for Depression",
        0.15,
        ages=(12, MAX_AGE),
        status=E_FIN,
        kind="AMB",
    ),
    Rule("bmi_enc", "encounter", "Encounter to Evaluate BMI", 0.15, ages=ADULT, status=E_FIN, kind="AMB"),
    # chronic conditions
    Rule(
        "htn",
        "condition",
        "Essential Hypertension",
        ((18, 0.08), (40, 0.30), (60, 0.55)),
        CHRONIC_ONSET,
        ADULT,
        status=C_ACTIVE,
    ),
    Rule(
        "diabetes",
        "condition",
        "Diabetes",
        ((0, 0.002), (18, 0.04), (45, 0.14), (65, 0.24)),
        CHRONIC_ONSET,
        status=C_ACTIVE,
    ),
    Rule(
        "esrd", "condition", "End Stage Renal Disease", 0.004, CHRONIC_ONSET, (40, MAX_AGE), status=C_ACTIVE
    ),
    Rule("ckd5", "condition", "Chronic Kidney Disease, Stage 5", 0.003, CHRONIC_ONSET, (40, MAX_AGE)),
    Rule("transplant_dx", "condition", "Kidney Transplant Recipient", 0.002, CHRONIC_ONSET, ADULT),
    Rule("pregnancy", "condition", "Pregnancy", 0.05, PERIOD, (15, 44), "female"),
    Rule("obesity", "condition", "Overweight or Obese", 0.30, CHRONIC_ONSET, ADULT, status=C_ACTIVE),
    Rule("bipolar", "condition", "Bipolar Disorder", 0.01, CHRONIC_ONSET, (12, MAX_AGE)),
    Rule("colon_cancer", "condition", "Malignant Neoplasm of Colon", 0.004, LAST_10_YEARS, (45, MAX_AGE)),
    Rule("frailty", "condition", "Frailty Diagnosis", 0.10, PERIOD, OLDER),
    Rule("advanced_illness", "condition", "Advanced Illness", 0.45, PRIOR_YEAR, OLDER, given="frailty"),
    Rule("palliative_dx", "condition", "Palliative Care Diagnosis", 0.01, PERIOD, OLDER),
    Rule("hospice_dx", "condition", "Hospice Diagnosis", 0.004, PERIOD, OLDER),
    Rule(
        "mastectomy_hx",
        "condition",
        "History of bilateral mastectomy",
        0.004,
        LAST_10_YEARS,
        (40, MAX_AGE),
        "female",
    ),
    Rule(
        "mastectomy_left_hx",
        "condition",
        "Status Post Left Mastectomy",
        0.004,
        LAST_10_YEARS,
        (40, MAX_AGE),
        "female",
    ),
    Rule(
        "cervix_absent",
        "condition",
        "Congenital or Acquired Absence of Cervix",
        0.02,
        LAST_10_YEARS,
        (21, MAX_AGE),
        "female",
    ),
    # procedures
    Rule(
        "colonoscopy", "procedure", "Colonoscopy", 0.55, LAST_10_YEARS, (45, 75), status=P_DONE, negated=0.01
    ),
    Rule("sigmoidoscopy", "procedure", "Flexible Sigmoidoscopy", 0.03, LAST_5_YEARS, (45, 75), status=P_DONE),
    Rule("colectomy", "procedure", "Total Colectomy", 0.002, LAST_10_YEARS, (45, MAX_AGE), status=P_DONE),
    Rule(
        "bilateral_mastectomy",
        "procedure",
        "Bilateral Mastectomy",
        0.003,
        LAST_10_YEARS,
        (40, MAX_AGE),
        "female",
        status=P_DONE,
    ),
    Rule(
        "mastectomy_right",
        "procedure",
        "Unilateral Mastectomy Right",
        0.004,
        LAST_10_YEARS,
        (40, MAX_AGE),
        "female",
        status=P_DONE,
    ),
    Rule(
        "hysterectomy",
        "procedure",
        "Hysterectomy with No Residual Cervix",
        ((30, 0.05), (45, 0.15)),
        LAST_10_YEARS,
        (30, MAX_AGE),
        "female",
        status=P_DONE,
    ),
    Rule("dialysis", "procedure", "Dialysis Services", 0.85, PERIOD, given="esrd", extra=3.0, status=P_DONE),
    Rule(
        "kidney_transplant",
        "procedure",
        "Kidney Transplant",
        0.5,
        LAST_10_YEARS,
        given="transplant_dx",
        status=P_DONE,
    ),
    Rule("palliative_proc", "procedure", "Palliative Care Intervention", 0.01, PERIOD, OLDER, status=P_DONE),
    Rule("hospice_proc", "procedure", "Hospice Care Ambulatory", 0.006, PERIOD, OLDER, status=P_DONE),
    Rule(
        "tobacco_counsel",
        "procedure",
        "Tobacco Use Cessation Counseling",
        0.04,
        PERIOD,
        (12, MAX_AGE),
        status=P_DONE,
        negated=0.05,
        reason="Patient Declined",
    ),
    Rule(
        "bmi_follow_up",
        "procedure",
        "Follow Up for Above Normal BMI",
        0.4,
        PERIOD,
        given="obesity",
        status=P_DONE,
    ),
    Rule(
        "depression_follow_up",
        "procedure",
        "Follow Up for Adult Depression",
        0.03,
        PERIOD,
        ADULT,
        status=P_DONE,
    ),
    Rule("hospice_enc", "encounter", "Hospice Encounter", 0.006, PERIOD, OLDER, status=E_FIN, kind="HH"),
    Rule(
        "palliative_enc",
        "encounter",
        "Palliative Care Encounter",
        0.01,
        PERIOD,
        OLDER,
        status=E_FIN,
        kind="AMB",
    ),
    Rule("frailty_enc", "encounter", "Frailty Encounter", 0.02, PERIOD, OLDER, status=E_FIN, kind="HH"),
    # laboratory, imaging and vital-sign observations
    Rule(
        "mammography",
        "observation",
        "Mammography",
        0.72,
        LAST_27_MONTHS,
        (40, 74),
        "female",
        status=O_FINAL,
        negated=0.01,
        reason="Patient Declined",
        category="imaging",
    ),
    Rule(
        "hba1c",
        "observation",
        "HbA1c Laboratory Test",
        0.88,
        PERIOD,
        given="diabetes",
        extra=0.8,
        status=O_FINAL,
        value=(7.5, 1.5, 4.0, 15.0),
        unit="%",
        category="laboratory",
    ),
    Rule(
        "hba1c_screen",
        "observation",
        "HbA1c Laboratory Test",
        0.10,
        PERIOD,
        (40, MAX_AGE),
        given="!diabetes",
        status=O_FINAL,
        value=(5.5, 0.4, 4.0, 6.4),
        unit="%",
        category="laboratory",
    ),
    Rule(
        "bp_htn",
        "observation",
        "",
        0.90,
        PERIOD,
        ADULT,
        given="htn",
        extra=1.2,
        status=O_FINAL,
        kind="bp",
        bp=(131.0, 14.0, 80.0, 10.0),
        category="vital-signs",
    ),
    Rule(
        "bp_other",
        "observation",
        "",
        0.60,
        PERIOD,
        ADULT,
        given="!htn",
        extra=0.5,
        status=O_FINAL,
        kind="bp",
        bp=(118.0, 12.0, 75.0, 8.0),
        category="vital-signs",
    ),
    Rule(
        "fobt",
        "observation",
        "Fecal Occult Blood Test (FOBT)",
        0.10,
        PERIOD,
        (45, 75),
        status=O_FINAL,
        category="laboratory",
    ),
    Rule(
        "fit_dna",
        "observation",
        "sDNA FIT Test",
        0.04,
        LAST_3_YEARS,
        (45, 75),
        status=O_FINAL,
        category="laboratory",
    ),
    Rule(
        "ct_colonography",
        "observation",
        "CT Colonography",
        0.01,
        LAST_5_YEARS,
        (45, 75),
        status=O_FINAL,
        category="imaging",
    ),
    Rule(
        "pap",
        "observation",
        "Pap Test",
        0.55,
        LAST_3_YEARS,
        (21, 64),
        "female",
        status=O_FINAL,
        category="laboratory",
    ),
    Rule(
        "hpv",
        "observation",
        "HPV Test",
        0.35,
        LAST_5_YEARS,
        (30, 64),
        "female",
        status=O_FINAL,
        category="laboratory",
    ),
    Rule(
        "tobacco_user",
        "observation",
        "Tobacco Use Screening",
        0.12,
        PERIOD,
        (12, MAX_AGE),
        status=O_FINAL,
        value_valueset="Tobacco User",
        category="social-history",
    ),
    Rule(
        "tobacco_non_user",
        "observation",
        "Tobacco Use Screening",
        0.55,
        PERIOD,
        (12, MAX_AGE),
        given="!tobacco_user",
        status=O_FINAL,
        value_valueset="Tobacco Non User",
        category="social-history",
    ),
    Rule("frailty_symptom", "observation", "Frailty Symptom", 0.05, PERIOD, OLDER, status=O_FINAL),
    # medications
    Rule(
        "dementia_meds",
        "medication_request",
        "Dementia Medications",
        0.25,
        PERIOD,
        OLDER,
        given="frailty",
        status=M_ORDER,
    ),
    Rule(
        "depression_meds",
        "medication_request",
        "Adult Depression Medications",
        0.08,
        PERIOD,
        ADULT,
        extra=1.0,
        status=M_ORDER,
        negated=0.02,
        reason="Patient Declined",
    ),
    Rule(
        "cessation_meds",
        "medication_request",
        "Tobacco Use Cessation Pharmacotherapy",
        0.2,
        PERIOD,
        given="tobacco_user",
        status=M_ORDER,
    ),
    Rule(
        "weight_meds",
        "medication_request",
        "Medications for Above Normal BMI",
        0.05,
        PERIOD,
        given="obesity",
        status=M_ORDER,
        negated=0.05,
        reason="Patient Declined",
    ),
    # immunizations (fixed CVX codes: no library measure retrieves them yet)
    Rule(
        "vaccine",
        "immunization",
        "",
        0.45,
        status=(("completed", 0.98), ("entered-in-error", 0.02)),
        kind="vaccine",
    ),
)
