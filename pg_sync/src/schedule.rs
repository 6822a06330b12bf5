// Cron schedules of cron triggers: five- or six-field expressions read by croner, run
// times found in an IANA time zone from chrono-tz (DST as croner documents it).
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use pgrx::prelude::*;

use crate::error::*;

/// Seconds between the Unix epoch and PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_SECS: i64 = 946_684_800;
const EXAMPLE_HINT: &str = "Write five fields (minute hour day-of-month month day-of-week), or six with seconds first, e.g. '0 2 * * *' for daily at 02:00 or '*/30 * * * * *' for every 30 seconds.";

/// A checked schedule: the parsed expression and its zone.
pub struct Schedule {
    cron: Cron,
    zone: Tz,
}

impl Schedule {
    /// Read `schedule` in `timezone`; the error says what is wrong, naming the field.
    pub fn parse(schedule: &str, timezone: &str) -> Result<Schedule, String> {
        let zone: Tz = timezone
            .parse()
            .map_err(|_| format!("timezone \"{timezone}\" is not an IANA time zone name"))?;
        // Five or six fields only: croner would also take a seventh (years).
        let fields = schedule.split_whitespace().count();
        if !(5..=6).contains(&fields) && !schedule.trim_start().starts_with('@') {
            return Err(format!(
                "schedule \"{schedule}\" is not a cron expression: it has {fields} fields, not 5 or 6"
            ));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(schedule)
            .map_err(|e| format!("schedule \"{schedule}\" is not a cron expression: {e}"))?;
        let s = Schedule { cron, zone };
        // A pattern that never matches (31 February) would leave the trigger stuck.
        let start = s.zone.timestamp_opt(0, 0).single();
        if start
            .and_then(|t| s.cron.find_next_occurrence(&t, false).ok())
            .is_none()
        {
            return Err(format!(
                "schedule \"{schedule}\" matches no date (such as 30 February)"
            ));
        }
        Ok(s)
    }

    /// The first run strictly after `after`.
    fn next_after(&self, after: DateTime<Tz>) -> Option<DateTime<Tz>> {
        // croner walks whole seconds: a run in `after`'s own second lies before it.
        let whole = whole_second(after)?;
        self.cron.find_next_occurrence(&whole, false).ok()
    }

    /// The run at or before `upto`, if any.
    fn at_or_before(&self, upto: DateTime<Tz>) -> Option<DateTime<Tz>> {
        let whole = whole_second(upto)?;
        self.cron.find_previous_occurrence(&whole, true).ok()
    }
}

fn whole_second(t: DateTime<Tz>) -> Option<DateTime<Tz>> {
    t.timezone().timestamp_opt(t.timestamp(), 0).single()
}

fn to_zoned(ts: TimestampWithTimeZone, zone: Tz) -> Option<DateTime<Tz>> {
    if !ts.is_finite() {
        return None;
    }
    let micros: i64 = ts.into();
    let utc = DateTime::<Utc>::from_timestamp_micros(micros + PG_EPOCH_SECS * 1_000_000)?;
    Some(utc.with_timezone(&zone))
}

fn to_pg(t: DateTime<Tz>) -> Option<TimestampWithTimeZone> {
    let micros = t.timestamp_micros() - PG_EPOCH_SECS * 1_000_000;
    TimestampWithTimeZone::try_from(micros).ok()
}

fn checked(schedule: &str, timezone: &str) -> Schedule {
    Schedule::parse(schedule, timezone)
        .unwrap_or_else(|problem| raise(ERRCODE_INVALID_PARAMETER_VALUE, problem, EXAMPLE_HINT))
}

/// Most runs cron_runs_between returns (the largest cron_missed_runs_cap).
const MOST_RUNS: i32 = 10_000;

#[pg_schema]
mod sync {
    use super::*;

    /// The first run of `schedule` in `timezone` strictly after `after`; NULL when there
    /// is none before the year 5000 or `after` is infinite.
    #[pg_extern(stable, parallel_safe)]
    fn cron_next(
        schedule: &str,
        timezone: &str,
        after: TimestampWithTimeZone,
    ) -> Option<TimestampWithTimeZone> {
        let s = checked(schedule, timezone);
        s.next_after(to_zoned(after, s.zone)?).and_then(to_pg)
    }

    /// The latest `max` (at most 10000) runs of `schedule` in `timezone` from `from` to
    /// `upto` (both included), oldest first: the runs a trigger missed, for the
    /// missed-runs policy.
    #[pg_extern(stable, parallel_safe)]
    fn cron_runs_between(
        schedule: &str,
        timezone: &str,
        from: TimestampWithTimeZone,
        upto: TimestampWithTimeZone,
        max: i32,
    ) -> Vec<TimestampWithTimeZone> {
        let s = checked(schedule, timezone);
        let (Some(from), Some(mut cursor)) = (to_zoned(from, s.zone), to_zoned(upto, s.zone))
        else {
            return Vec::new();
        };
        // Anyone may call it: the count is bounded as the cron_missed_runs_cap setting
        // is, and a long walk stays cancellable (statement_timeout, pg_cancel_backend).
        let most = max.clamp(0, MOST_RUNS) as usize;
        let mut runs = Vec::new();
        while runs.len() < most {
            pgrx::check_for_interrupts!();
            let Some(run) = s.at_or_before(cursor) else {
                break;
            };
            if run < from {
                break;
            }
            runs.extend(to_pg(run));
            // Step just before this run so the next search finds the one before it.
            let Some(before) = run.checked_sub_signed(chrono::TimeDelta::seconds(1)) else {
                break;
            };
            cursor = before;
        }
        runs.reverse();
        runs
    }

    /// NULL when `schedule` in `timezone` can be used by a cron trigger, else what is
    /// wrong with it (the cron_trigger check names the trigger and raises it).
    #[pg_extern(stable, parallel_safe)]
    fn cron_schedule_problem(schedule: &str, timezone: &str) -> Option<String> {
        Schedule::parse(schedule, timezone).err()
    }
}
