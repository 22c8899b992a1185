-- The session every measure query of benchmarks/sql/ runs in (benchmarks/duckdb_peer.py executes this first,
-- then creates the lake views and the valueset table).

-- TIMESTAMPTZ <-> DATE casts of the period bounds are UTC: the measurement period is taken in UTC, as the
-- engine's default evaluation time zone (EvaluationConfig.tz_offset_min = 0).
SET TimeZone = 'UTC';

-- The local calendar date of an instant in the offset it was recorded with (minutes east of UTC; UTC when
-- null): CQL "date from" / "day of" on a data value. Computed on epoch microseconds, because TIMESTAMPTZ
-- arithmetic goes through ICU time zones, which costs about 20x more here.
CREATE OR REPLACE MACRO local_date(instant, offset_min) AS
    CAST(make_timestamp(epoch_us(instant) + 60000000 * CAST(COALESCE(offset_min, 0) AS BIGINT)) AS DATE);

-- Whether a list of codings (a CodeableConcept) holds the coding system|code. A null list holds nothing.
CREATE OR REPLACE MACRO has_coding(codings, coding_system, coding_code) AS
    len(list_filter(codings, lambda c: c.system = coding_system AND c.code = coding_code)) > 0;
