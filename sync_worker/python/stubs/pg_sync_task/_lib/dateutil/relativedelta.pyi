# `dateutil.relativedelta` in task code.
from dateutil.relativedelta import (
    FR as FR,
    MO as MO,
    SA as SA,
    SU as SU,
    TH as TH,
    TU as TU,
    WE as WE,
    relativedelta as relativedelta,
)
