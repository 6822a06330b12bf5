# `dateutil.parser` in task code.
from dateutil.parser import ParserError as ParserError, isoparse as isoparse, parse as parse
