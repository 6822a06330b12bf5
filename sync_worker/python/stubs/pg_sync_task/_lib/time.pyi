# `time` in task code: the functions below only.
from time import (
    gmtime as gmtime,
    localtime as localtime,
    mktime as mktime,
    monotonic as monotonic,
    perf_counter as perf_counter,
    sleep as sleep,
    strftime as strftime,
    strptime as strptime,
    time as time,
    time_ns as time_ns,
)
