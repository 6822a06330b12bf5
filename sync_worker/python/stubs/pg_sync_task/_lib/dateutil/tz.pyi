# `dateutil.tz` in task code.
from dateutil.tz import UTC as UTC, gettz as gettz, tzlocal as tzlocal, tzoffset as tzoffset, tzutc as tzutc
