"""The synthetic world as data: who has what, when, with which statuses and values.

Each :class:`Rule` adds events to one table for the patients it selects (sex, age band, an earlier rule's
selection, a probability), with codes drawn from one of the project's synthetic value sets (by name), a
timing window relative to the measurement period, a status mix and an optional value distribution. The
prevalences are tuned so that the library measures land in realistic ranges (about 50-80 % screening,
15-35 % poor HbA1c control among diabetics, 50-70 % controlled blood pressure among hypertensives).
Changing the world means editing this table, not the generator.

Structure: ``WORLD`` holds the patient-level rules (visits, chronic conditions, screenings: each event on its own
random day), then ``EPISODES``: rules anchored to an earlier rule's events (``anchor``), for measures that relate
rows to one another: a blood-pressure reading inside its office visit (CMS22, CMS165), a depression screening
on the day of its visit with follow-up during it (CMS2), a BMI at its visit (CMS69), a pharyngitis visit with
its diagnosis, antibiotic order and strep test (CMS146), a PHQ-9 above 9 at a visit then a follow-up PHQ-9 a
year later (CMS159), an antidepressant first fill and monthly refills (CMS128), and admissions in the year
after the period, for the 2026 hospital measures (CMS986, CMS871, CMS108). Vaccines count from the birth date
(``from_birth``) with a fixed number of doses on distinct days (CMS117).

An anchored rule may also describe its anchor encounter: a condition or procedure with a ``rank`` is listed on
it (``encounter.diagnoses`` with its ``use``, ``encounter.procedures``: rank 1 is the principal diagnosis or
procedure), and a rule on ``encounter_location`` is a stay of the encounter in a location of that type
(``encounter.locations``), as CMS108 reads them.

``LAYERS``: each layer of rules draws from its own random stream (the first from the generator's original
one), hard cases included, so a layer appended for a new measure leaves every earlier layer's rows as they were
and the other measures' rates unchanged. ``CMS108_WORLD`` is the second layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
BMI = ("http://loinc.org", "39156-5", "Body mass index (BMI) [Ratio]")
BMI_PROFILE = "http://hl7.org/fhir/StructureDefinition/bmi"
ADULT_DEPRESSION_SCREEN = ("http://loinc.org", "73832-8", "Adult depression screening assessment")
TEEN_DEPRESSION_SCREEN = ("http://loinc.org", "73831-0", "Adolescent depression screening assessment")
SCREEN_NEGATIVE = ("http://snomed.info/sct", "428171000124102", "Depression screening negative (finding)")
SCREEN_POSITIVE = ("http://snomed.info/sct", "428181000124104", "Depression screening positive (finding)")
NEGATIVE = ("http://snomed.info/sct", "260385009", "Negative (qualifier value)")
POSITIVE = ("http://snomed.info/sct", "10828004", "Positive (qualifier value)")
# Result mixes: a value is drawn uniformly from the tuple, so repeating a code weights it.
DEPRESSION_SCREEN_RESULTS = (SCREEN_NEGATIVE,) * 4 + (SCREEN_POSITIVE,)  # 20 % positive
LAB_RESULTS = (NEGATIVE,) * 9 + (POSITIVE,)  # 10 % positive
STREP_RESULTS = (NEGATIVE,) * 3 + (POSITIVE,)  # 25 % positive
NEXT_YEAR = (365, 729)  # the year after the period: the 2026 hospital measures (CMS871, CMS986, CMS108)
VTE_RISK = ("http://loinc.org", "72136-5", "Risk for venous thromboembolism")
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
    # Episodes: ``anchor`` names an earlier rule; then ``prob`` applies to each of its events (not patients)
    # and this rule's event starts ``offset`` days (uniform, inclusive) plus ``lag`` minutes after the anchor
    # event's start, so a reading lands inside its encounter, a test a day after the visit, and so on.
    anchor: str | None = None
    offset: tuple[int, int] = (0, 0)
    lag: tuple[int, int] = (1, 15)
    from_birth: bool = False  # ``window`` counts days from the birth date instead of January 1 of the period
    doses: int = (
        0  # exactly this many events, one in each of ``doses`` equal slices of ``window`` (distinct days)
    )
    codes: tuple[tuple[str, str, str], ...] = ()  # fixed codes instead of ``valueset`` (LOINC panels, ...)
    value_codes: tuple[tuple[str, str, str], ...] = ()  # fixed value concepts (result codes)
    reason_code: str | None = None  # value set (by name) of the row's reasonCode
    profile: str | None = None  # a declared profile (observation)
    route: str | None = None  # value set (by name) of a medication administration's route
    # Anchored to an encounter rule: list the row on its encounter with this rank (condition: diagnoses, with
    # ``use``; procedure: procedures); 0: not listed.
    rank: int = 0
    use: str | None = None


E_FIN = (("finished", 0.985), ("cancelled", 0.01), ("in-progress", 0.005))
A_DONE = (("completed", 0.97), ("in-progress", 0.01), ("stopped", 0.01), ("entered-in-error", 0.01))
P_DONE = (("completed", 0.99), ("in-progress", 0.005), ("entered-in-error", 0.005))
O_FINAL = (
    ("final", 0.95),
    ("amended", 0.02),
    ("corrected", 0.01),
    ("preliminary", 0.015),
    ("cancelled", 0.005),
)
M_ORDER = (("active", 0.6), ("completed", 0.33), ("stopped", 0.05), ("on-hold", 0.02))
S_ORDER = (("active", 0.45), ("completed", 0.53), ("revoked", 0.02))
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
        category="problem-list-item",
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
    Rule(
        "obesity",
        "condition",
        "Overweight or Obese",
        0.30,
        CHRONIC_ONSET,
        ADULT,
        status=C_ACTIVE,
        category="problem-list-item",
    ),
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
        ages=ADULT,
        given="htn",
        status=O_FINAL,
        kind="bp",
        bp=(131.0, 14.0, 80.0, 10.0),
        category="vital-signs",
        anchor="office",
    ),
    Rule(
        "bp_other",
        "observation",
        "",
        0.85,
        ages=ADULT,
        given="!htn",
        status=O_FINAL,
        kind="bp",
        bp=(118.0, 12.0, 75.0, 8.0),
        category="vital-signs",
        anchor="office",
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
        value_codes=LAB_RESULTS,
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
        value_codes=LAB_RESULTS,
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
        category="survey",
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
        category="survey",
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

# Episodes and per-measure worlds, appended after the rules they anchor to (rule order is the random stream's
# order: appending keeps every earlier rule's draws, and so the older measures' rates, unchanged).
_VACCINE: dict[str, Any] = {"table": "immunization", "ages": (2, 2), "from_birth": True}
EPISODES: tuple[Rule, ...] = (
    # CMS2 depression screening at the screening visit (same day), follow-up during it or within 2 days
    Rule(
        "depression_screen_adult",
        "observation",
        "",
        0.75,
        ages=ADULT,
        anchor="depression_enc",
        lag=(-30, -5),
        codes=(ADULT_DEPRESSION_SCREEN,),
        status=O_FINAL,
        value_codes=DEPRESSION_SCREEN_RESULTS,
        category="survey",
    ),
    Rule(
        "depression_screen_teen",
        "observation",
        "",
        0.70,
        ages=(12, 17),
        anchor="depression_enc",
        lag=(-30, -5),
        codes=(TEEN_DEPRESSION_SCREEN,),
        status=O_FINAL,
        value_codes=DEPRESSION_SCREEN_RESULTS,
        category="survey",
    ),
    Rule(
        "depression_visit_follow_up",
        "procedure",
        "Follow Up for Adult Depression",
        0.12,
        ages=ADULT,
        anchor="depression_enc",
        lag=(5, 15),
        status=P_DONE,
    ),
    Rule(
        "depression_visit_referral",
        "service_request",
        "Referral for Adult Depression",
        0.06,
        ages=ADULT,
        anchor="depression_enc",
        offset=(0, 1),
        status=S_ORDER,
    ),
    Rule(
        "teen_depression_visit_follow_up",
        "procedure",
        "Follow Up for Adolescent Depression",
        0.15,
        ages=(12, 17),
        anchor="depression_enc",
        lag=(5, 15),
        status=P_DONE,
    ),
    # CMS69 BMI at the BMI visit: higher among patients with an overweight/obesity problem
    Rule(
        "bmi_obese",
        "observation",
        "",
        0.85,
        given="obesity",
        anchor="bmi_enc",
        codes=(BMI,),
        profile=BMI_PROFILE,
        status=O_FINAL,
        value=(32.0, 5.0, 25.0, 60.0),
        unit="kg/m2",
        category="vital-signs",
    ),
    Rule(
        "bmi_other",
        "observation",
        "",
        0.85,
        given="!obesity",
        anchor="bmi_enc",
        codes=(BMI,),
        profile=BMI_PROFILE,
        status=O_FINAL,
        value=(22.8, 2.6, 16.0, 29.9),
        unit="kg/m2",
        category="vital-signs",
    ),
    Rule(
        "bmi_visit_follow_up",
        "procedure",
        "Follow Up for Above Normal BMI",
        0.45,
        given="obesity",
        anchor="bmi_enc",
        lag=(5, 15),
        status=P_DONE,
    ),
    Rule(
        "bmi_referral",
        "service_request",
        "Referrals Where Weight Assessment May Occur",
        0.10,
        given="obesity",
        anchor="bmi_enc",
        status=S_ORDER,
        reason_code="Overweight or Obese",
    ),
    # CMS22 follow-up orders at office visits (blood pressure readings are anchored to them above)
    Rule(
        "bp_follow_up_6m",
        "service_request",
        "Follow Up Within 6 Months",
        0.35,
        ages=ADULT,
        given="!htn",
        anchor="office",
        status=S_ORDER,
    ),
    Rule(
        "bp_follow_up_4w",
        "service_request",
        "Follow Up Within 4 Weeks",
        0.20,
        ages=ADULT,
        given="!htn",
        anchor="office",
        status=S_ORDER,
    ),
    Rule(
        "bp_lifestyle",
        "service_request",
        "Lifestyle Recommendation",
        0.30,
        ages=ADULT,
        given="!htn",
        anchor="office",
        status=S_ORDER,
    ),
    Rule(
        "bp_lab",
        "service_request",
        "Laboratory Tests for Hypertension",
        0.15,
        ages=ADULT,
        given="!htn",
        anchor="office",
        status=S_ORDER,
    ),
    Rule(
        "bp_referral",
        "service_request",
        "Referral to Primary Care or Alternate Provider",
        0.05,
        ages=ADULT,
        given="!htn",
        anchor="office",
        status=S_ORDER,
        reason_code="Finding of Elevated Blood Pressure or Hypertension",
    ),
    # CMS146 pharyngitis visits: diagnosis at the visit, antibiotic ordered within 2 days, strep test around it
    Rule(
        "pharyngitis_enc",
        "encounter",
        "Office Visit",
        ((3, 0.10), (18, 0.04), (65, 0.02)),
        (0, 355),
        (3, MAX_AGE),
        status=E_FIN,
        kind="AMB",
    ),
    Rule("pharyngitis_dx", "condition", "Acute Pharyngitis", 0.85, anchor="pharyngitis_enc", lag=(2, 15)),
    Rule("tonsillitis_dx", "condition", "Acute Tonsillitis", 0.15, anchor="pharyngitis_enc", lag=(2, 15)),
    Rule(
        "pharyngitis_antibiotic",
        "medication_request",
        "Antibiotic Medications for Pharyngitis",
        0.80,
        anchor="pharyngitis_enc",
        offset=(0, 2),
        status=(("active", 0.7), ("completed", 0.3)),
    ),
    Rule(
        "strep_test",
        "observation",
        "Group A Streptococcus Test",
        ((3, 0.85), (18, 0.70), (65, 0.55)),
        anchor="pharyngitis_enc",
        offset=(-1, 1),
        status=O_FINAL,
        value_codes=STREP_RESULTS,
        category="laboratory",
    ),
    Rule(
        "respiratory_comorbid",
        "condition",
        "Comorbid Conditions for Respiratory Conditions",
        0.01,
        CHRONIC_ONSET,
        status=C_ACTIVE,
    ),
    # CMS159 depression remission: a diagnosis, a PHQ-9 above 9 at a visit 2-14 months before the period,
    # a follow-up PHQ-9 about a year later
    Rule(
        "major_depression",
        "condition",
        "Major Depression Including Remission",
        0.07,
        (-2000, -430),
        (13, MAX_AGE),
        status=C_ACTIVE,
    ),
    Rule(
        "depression_index_enc",
        "encounter",
        "Contact or Office Visit",
        0.60,
        (-420, -65),
        given="major_depression",
        status=E_FIN,
        kind="AMB",
    ),
    Rule(
        "phq9_index",
        "observation",
        "PHQ 9 and PHQ 9M Tools",
        0.85,
        anchor="depression_index_enc",
        status=O_FINAL,
        value=(15.0, 4.0, 10.0, 27.0),
        decimals=0,
        category="survey",
    ),
    Rule(
        "phq9_follow_up",
        "observation",
        "PHQ 9 and PHQ 9M Tools",
        0.65,
        anchor="phq9_index",
        offset=(300, 420),
        status=O_FINAL,
        value=(7.0, 4.5, 0.0, 27.0),
        decimals=0,
        category="survey",
    ),
    # CMS117 childhood immunizations: two-year-olds, doses on distinct days from day 42 (MMR, VZV, hepatitis A
    # after the first birthday); a child behind on DTaP is rarely up to date on the others
    Rule("dtap", valueset="DTaP Vaccine", prob=0.82, window=(42, 700), doses=4, **_VACCINE),
    *(
        Rule(f"vaccine_{i}", valueset=vs, prob=0.97, window=win, doses=d, given="dtap", **_VACCINE)
        for i, (vs, win, d) in enumerate(
            (
                ("Inactivated Polio Vaccine (IPV)", (42, 700), 3),
                ("Measles, Mumps and Rubella (MMR) Vaccine", (366, 700), 1),
                ("Hib Vaccine (3 dose schedule)", (42, 700), 3),
                ("Hepatitis B Vaccine", (42, 700), 3),
                ("Varicella Zoster Vaccine (VZV)", (366, 700), 1),
                ("Pneumococcal Conjugate Vaccine", (42, 700), 4),
                ("Hepatitis A Vaccine", (366, 700), 1),
                ("Rotavirus Vaccine (3 dose schedule)", (42, 240), 3),
                ("Child Influenza Vaccine", (180, 700), 2),
            )
        )
    ),
    Rule(
        "dtap_partial",
        valueset="DTaP Vaccine",
        prob=0.7,
        window=(42, 700),
        doses=2,
        given="!dtap",
        **_VACCINE,
    ),
    # CMS128 antidepressant management: a depression visit in the intake period (May 1 of the year before the
    # period .. April 30 of it), the diagnosis at it, a first 30-day fill within 3 days, then monthly refills
    # with attrition (about 70 % reach 84 days covered, about 45 % 180 days)
    Rule(
        "antidepressant_start_enc",
        "encounter",
        "Office Visit",
        0.012,
        (-245, 119),
        ADULT,
        status=E_FIN,
        kind="AMB",
    ),
    Rule("antidepressant_mdd", "condition", "Major Depression", 1.0, anchor="antidepressant_start_enc"),
    Rule(
        "antidepressant_fill_1",
        "medication_dispense",
        "Antidepressant Medication",
        0.95,
        anchor="antidepressant_start_enc",
        offset=(0, 3),
    ),
    *(
        Rule(
            f"antidepressant_fill_{i}",
            "medication_dispense",
            "Antidepressant Medication",
            0.88,
            anchor=f"antidepressant_fill_{i - 1}",
            offset=(27, 33),
        )
        for i in range(2, 9)
    ),
    # CMS986 / CMS871 (period 2026): adult admissions the year after the period, with malnutrition screening,
    # assessment and care, and glucose results
    Rule(
        "admission_next_year",
        "encounter",
        "Encounter Inpatient",
        ((18, 0.03), (45, 0.06), (65, 0.12)),
        NEXT_YEAR,
        ADULT,
        status=E_FIN,
        kind="IMP",
        minutes=(1500, 10080),
    ),
    Rule(
        "malnutrition_screen_not_at_risk",
        "observation",
        "Malnutrition Risk Screening",
        0.60,
        anchor="admission_next_year",
        lag=(60, 900),
        status=O_FINAL,
        value_valueset="Malnutrition Screening Finding of Not At Risk Result",
        category="survey",
    ),
    Rule(
        "malnutrition_screen_at_risk",
        "observation",
        "Malnutrition Risk Screening",
        0.20,
        anchor="admission_next_year",
        lag=(60, 900),
        status=O_FINAL,
        value_valueset="Malnutrition Screening Finding of At Risk Result",
        category="survey",
    ),
    Rule(
        "dietitian_referral",
        "procedure",
        "Hospital Dietitian Referral",
        0.15,
        anchor="admission_next_year",
        lag=(120, 1200),
        status=P_DONE,
    ),
    Rule(
        "nutrition_assessment_moderate",
        "observation",
        "Nutrition Assessment",
        0.6,
        given="malnutrition_screen_at_risk",
        anchor="admission_next_year",
        lag=(1000, 1400),
        status=O_FINAL,
        value_valueset="Nutrition Assessment Status Finding of Moderately Malnourished",
        category="survey",
    ),
    Rule(
        "nutrition_assessment_well",
        "observation",
        "Nutrition Assessment",
        0.3,
        given="malnutrition_screen_at_risk",
        anchor="admission_next_year",
        lag=(1000, 1400),
        status=O_FINAL,
        value_valueset=(
            "Nutrition Assessment Status Finding of Well Nourished or Not Malnourished or Mildly Malnourished"
        ),
        category="survey",
    ),
    Rule(
        "malnutrition_dx",
        "condition",
        "Malnutrition Diagnosis",
        0.5,
        given="nutrition_assessment_moderate",
        anchor="admission_next_year",
        lag=(1400, 1440),
    ),
    Rule(
        "nutrition_care_plan",
        "procedure",
        "Nutrition Care Plan",
        0.6,
        given="nutrition_assessment_moderate",
        anchor="admission_next_year",
        lag=(1400, 1440),
        status=P_DONE,
    ),
    Rule(
        "glucose_diabetic",
        "observation",
        "Glucose Lab Test Mass Per Volume",
        0.9,
        given="diabetes",
        anchor="admission_next_year",
        lag=(30, 1400),
        status=O_FINAL,
        value=(190.0, 70.0, 40.0, 650.0),
        decimals=0,
        unit="mg/dL",
        category="laboratory",
    ),
    Rule(
        "glucose_other",
        "observation",
        "Glucose Lab Test Mass Per Volume",
        0.5,
        given="!diabetes",
        anchor="admission_next_year",
        lag=(30, 1400),
        status=O_FINAL,
        value=(110.0, 30.0, 50.0, 400.0),
        decimals=0,
        unit="mg/dL",
        category="laboratory",
    ),
    # a later result for diabetic patients still in hospital (CMS871 never counts day 1 of a stay)
    Rule(
        "glucose_diabetic_later",
        "observation",
        "Glucose Lab Test Mass Per Volume",
        0.85,
        given="diabetes",
        anchor="admission_next_year",
        lag=(1500, 5700),
        status=O_FINAL,
        value=(210.0, 80.0, 40.0, 650.0),
        decimals=0,
        unit="mg/dL",
        category="laboratory",
    ),
)

# CMS108 VTE prophylaxis (period 2026), anchored to the 2026 admissions above: what excludes an admission
# (principal diagnoses of stroke or a mental disorder, principal procedures of selected surgeries, an ICU stay,
# comfort measures; delivery and VTE diagnoses leave the initial population; short stays come from the
# admissions' own lengths), then prophylaxis on the day of or the day after admission (or after an anesthesia
# the day after admission), low-risk findings, and documented reasons for none; some doses come late. About
# 80-87 % of the remaining admissions meet the numerator (published VTE-1 performance: roughly 80-95 %).
_ADMISSION: dict[str, Any] = {"anchor": "admission_next_year", "ages": ADULT}
_PRINCIPAL: dict[str, Any] = {**_ADMISSION, "rank": 1, "use": "billing", "lag": (5, 60)}
_EARLY: dict[str, Any] = {**_ADMISSION, "offset": (0, 1), "lag": (30, 480)}  # day of or day after admission
_SURGERY: dict[str, Any] = {**_ADMISSION, "rank": 1, "offset": (0, 1), "lag": (60, 600), "minutes": (60, 300)}
_MEDICAL_REASON = "Medical Reason For Not Providing Treatment"
CMS108_WORLD: tuple[Rule, ...] = (
    # who leaves the initial population: a delivery, a VTE diagnosed at the admission
    Rule(
        "vte_delivery_dx",
        "condition",
        "Obstetrical or Pregnancy Related Conditions",
        0.12,
        sex="female",
        **{**_PRINCIPAL, "ages": (18, 44)},
    ),
    Rule(
        "vte_obstetric_vte_dx",
        "condition",
        "Obstetrics VTE",
        0.03,
        sex="female",
        given="vte_delivery_dx",
        **{**_PRINCIPAL, "ages": (18, 44), "rank": 2},
    ),
    Rule("vte_dx", "condition", "Venous Thromboembolism", 0.02, **_PRINCIPAL),
    # exclusions: principal diagnoses and procedures, ICU stays, comfort measures
    Rule("vte_ischemic_stroke_dx", "condition", "Ischemic Stroke", ((18, 0.01), (65, 0.04)), **_PRINCIPAL),
    Rule("vte_hemorrhagic_stroke_dx", "condition", "Hemorrhagic Stroke", 0.01, **_PRINCIPAL),
    Rule("vte_mental_dx", "condition", "Mental Health Diagnoses", ((18, 0.05), (45, 0.02)), **_PRINCIPAL),
    Rule("vte_secondary_stroke_dx", "condition", "Ischemic Stroke", 0.01, **{**_PRINCIPAL, "rank": 2}),
    Rule("vte_af_dx", "condition", "Atrial Fibrillation or Flutter", ((18, 0.02), (65, 0.08)), **_PRINCIPAL),
    Rule(
        "vte_hip_replacement",
        "procedure",
        "Hip Replacement Surgery",
        ((45, 0.02), (65, 0.04)),
        status=P_DONE,
        **_SURGERY,
    ),
    Rule(
        "vte_knee_replacement",
        "procedure",
        "Knee Replacement Surgery",
        ((45, 0.02), (65, 0.04)),
        status=P_DONE,
        **_SURGERY,
    ),
    Rule(
        "vte_hip_fracture_surgery",
        "procedure",
        "Hip Fracture Surgery",
        ((65, 0.01), (80, 0.03)),
        status=P_DONE,
        **_SURGERY,
    ),
    Rule("vte_general_surgery", "procedure", "General Surgery", 0.04, status=P_DONE, **_SURGERY),
    Rule(
        "vte_gynecological_surgery",
        "procedure",
        "Gynecological Surgery",
        0.02,
        sex="female",
        status=P_DONE,
        **_SURGERY,
    ),
    Rule("vte_urological_surgery", "procedure", "Urological Surgery", 0.01, status=P_DONE, **_SURGERY),
    Rule(
        "vte_intracranial_surgery", "procedure", "Intracranial Neurosurgery", 0.005, status=P_DONE, **_SURGERY
    ),
    Rule(
        "vte_icu_stay",
        "encounter_location",
        "Intensive Care Unit",
        ((18, 0.05), (65, 0.09)),
        **{**_ADMISSION, "offset": (0, 2), "lag": (30, 600), "minutes": (600, 4320)},
    ),
    Rule(
        "vte_comfort_measures",
        "service_request",
        "Comfort Measures",
        ((18, 0.005), (75, 0.03)),
        status=S_ORDER,
        **_EARLY,
    ),
    # an anesthesia the day after admission (a procedure that is not a selected surgery), listed second
    Rule(
        "vte_anesthesia",
        "procedure",
        "General or Neuraxial Anesthesia",
        0.05,
        status=P_DONE,
        **{**_ADMISSION, "rank": 2, "offset": (1, 1), "lag": (60, 600), "minutes": (60, 240)},
    ),
    # prophylaxis: anticoagulants given, devices applied, on the day of or the day after admission
    Rule(
        "vte_lmwh",
        "medication_administration",
        "Low Molecular Weight Heparin for VTE Prophylaxis",
        0.72,
        status=A_DONE,
        **_EARLY,
    ),
    Rule(
        "vte_heparin_sc",
        "medication_administration",
        "Low Dose Unfractionated Heparin for VTE Prophylaxis",
        0.18,
        status=A_DONE,
        route="Subcutaneous route",
        **_EARLY,
    ),
    Rule(
        "vte_fondaparinux",
        "medication_administration",
        "Injectable Factor Xa Inhibitor for VTE Prophylaxis",
        0.02,
        status=A_DONE,
        **_EARLY,
    ),
    Rule(
        "vte_rivaroxaban",
        "medication_administration",
        "Rivaroxaban for VTE Prophylaxis",
        0.02,
        status=A_DONE,
        **_EARLY,
    ),
    Rule(
        "vte_warfarin",
        "medication_administration",
        "Warfarin",
        0.3,
        given="vte_af_dx",
        status=A_DONE,
        **_EARLY,
    ),
    Rule(
        "vte_apixaban",
        "medication_administration",
        "Oral Factor Xa Inhibitor for VTE Prophylaxis or VTE Treatment",
        0.5,
        given="vte_af_dx",
        status=A_DONE,
        **_EARLY,
    ),
    Rule(
        "vte_ipc",
        "procedure",
        "Application of Intermittent Pneumatic Compression Devices",
        0.30,
        status=P_DONE,
        **_EARLY,
    ),
    Rule(
        "vte_stockings",
        "procedure",
        "Application of Graduated Compression Stockings",
        0.05,
        status=P_DONE,
        **_EARLY,
    ),
    Rule("vte_foot_pump", "procedure", "Application of Venous Foot Pumps", 0.01, status=P_DONE, **_EARLY),
    Rule(
        "vte_lmwh_after_anesthesia",
        "medication_administration",
        "Low Molecular Weight Heparin for VTE Prophylaxis",
        0.7,
        status=A_DONE,
        anchor="vte_anesthesia",
        offset=(0, 1),
        lag=(60, 360),
    ),
    # prophylaxis started late (days 2-4): no numerator by itself
    Rule(
        "vte_lmwh_late",
        "medication_administration",
        "Low Molecular Weight Heparin for VTE Prophylaxis",
        0.10,
        status=A_DONE,
        **{**_EARLY, "offset": (2, 4)},
    ),
    # low risk: a low VTE risk assessment, an INR above 3 (values mostly normal), therapeutic anticoagulation
    Rule(
        "vte_low_risk",
        "observation",
        "",
        0.15,
        codes=(VTE_RISK,),
        value_valueset="Low Risk",
        status=O_FINAL,
        category="survey",
        **{**_ADMISSION, "lag": (30, 600)},
    ),
    Rule(
        "vte_inr",
        "observation",
        "INR",
        0.30,
        status=O_FINAL,
        value=(1.3, 0.8, 0.8, 8.0),
        unit="{INR}",
        category="laboratory",
        **_EARLY,
    ),
    Rule(
        "vte_iv_heparin",
        "medication_administration",
        "Unfractionated Heparin",
        0.03,
        status=A_DONE,
        route="Intravenous route",
        **_EARLY,
    ),
    # no prophylaxis for a medical reason (medication and device both), or refused by the patient
    Rule(
        "vte_medication_contraindicated",
        "medication_administration",
        "Low Molecular Weight Heparin for VTE Prophylaxis",
        0.03,
        negated=1.0,
        reason=_MEDICAL_REASON,
        **_EARLY,
    ),
    Rule(
        "vte_device_contraindicated",
        "service_request",
        "Intermittent pneumatic compression devices",
        0.85,
        given="vte_medication_contraindicated",
        negated=1.0,
        reason=_MEDICAL_REASON,
        **_EARLY,
    ),
    Rule(
        "vte_medication_refused",
        "medication_administration",
        "Low Molecular Weight Heparin for VTE Prophylaxis",
        0.02,
        negated=1.0,
        reason="Patient Refusal",
        **_EARLY,
    ),
    Rule(
        "vte_device_refused",
        "procedure",
        "Application of Intermittent Pneumatic Compression Devices",
        0.01,
        negated=1.0,
        reason="Patient Refusal",
        **_EARLY,
    ),
)
WORLD = WORLD + EPISODES
LAYERS: tuple[tuple[Rule, ...], ...] = (WORLD, CMS108_WORLD)
WORLD = WORLD + CMS108_WORLD
