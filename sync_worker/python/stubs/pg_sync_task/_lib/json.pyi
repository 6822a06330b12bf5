# `json` in task code: loads, dumps and JSONDecodeError only.
from json import JSONDecodeError as JSONDecodeError, dumps as dumps, loads as loads
