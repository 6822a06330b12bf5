# `dateutil` in task code: its parser, relativedelta, rrule and tz, each with the names
# listed in its module here.
from pg_sync_task._lib.dateutil import parser as parser, relativedelta as relativedelta, rrule as rrule, tz as tz
