# `datetime` in task code: the classes and constants below only.
from datetime import (
    MAXYEAR as MAXYEAR,
    MINYEAR as MINYEAR,
    date as date,
    datetime as datetime,
    time as time,
    timedelta as timedelta,
    timezone as timezone,
    tzinfo as tzinfo,
)
