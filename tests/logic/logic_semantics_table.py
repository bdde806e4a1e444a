"""The semantics table: (expression, record values, mode, expected).

Record values are REDCap raw export strings ('' = blank). mode: 'redcap', 'kleene' or 'both'.
Expected: True / False / None (unknown in kleene, blank otherwise) / a number (compared to 1e-9) / a text.
as_of for every row is AS_OF below.
"""

from datetime import datetime

AS_OF = datetime(2024, 3, 1, 12, 30)

B = ""  # blank

TABLE = [
    # ---- comparison with blanks (REDCap kb RC-BL-02)
    ("[x] = ''", {"x": B}, "both", True),
    ("[x] = ''", {"x": "3"}, "both", False),
    ("[x] <> ''", {"x": B}, "both", False),
    ("[x] <> ''", {"x": "0"}, "both", True),
    ('[x] = ""', {"x": B}, "both", True),
    ("[x] <> 0", {"x": B}, "redcap", True),
    ("[x] <> 0", {"x": B}, "kleene", None),
    ("[x] = 0", {"x": B}, "redcap", False),
    ("[x] = 0", {"x": B}, "kleene", None),
    ("[x] = [y]", {"x": B, "y": B}, "redcap", True),
    ("[x] = [y]", {"x": B, "y": B}, "kleene", None),
    ("[x] <> [y]", {"x": B, "y": "1"}, "redcap", True),
    # documented choice: blank under < <= > >= is false in redcap mode, unknown in kleene
    ("[x] < 18", {"x": B}, "redcap", False),
    ("[x] > 18", {"x": B}, "redcap", False),
    ("[x] <= 18", {"x": B}, "redcap", False),
    ("[x] >= 18", {"x": B}, "redcap", False),
    ("[x] < 18", {"x": B}, "kleene", None),
    ("[x] >= 18", {"x": B}, "kleene", None),
    ("[x] > ''", {"x": "5"}, "redcap", False),
    # ---- comparison operators
    ("[x] = 5", {"x": "5"}, "both", True),
    ("[x] = '5'", {"x": "5"}, "both", True),
    ("[x] = 5", {"x": "5.0"}, "both", True),
    ("[x] == 5", {"x": "5"}, "both", True),
    ("[x] != 5", {"x": "5"}, "both", False),
    ("[x] <> 5", {"x": "4"}, "both", True),
    ("[x] < 5", {"x": "4"}, "both", True),
    ("[x] < 5", {"x": "5"}, "both", False),
    ("[x] <= 5", {"x": "5"}, "both", True),
    ("[x] > 5", {"x": "10"}, "both", True),  # numbers compare as numbers, not text ('10' < '5')
    ("[x] >= 5", {"x": "4.99"}, "both", False),
    ("[x] = 'abc'", {"x": "abc"}, "both", True),
    ("[x] = 'ABC'", {"x": "abc"}, "both", False),  # text equality is case-sensitive
    ("[x] < 'b'", {"x": "abc"}, "both", True),  # text orders as text
    ("[x] = 1", {"x": "abc"}, "both", False),
    ("[x] = [y]", {"x": "2", "y": "2.00"}, "both", True),
    # ---- boolean operators and precedence
    ("[a] = 1 and [b] = 1", {"a": "1", "b": "1"}, "both", True),
    ("[a] = 1 AND [b] = 1", {"a": "1", "b": "0"}, "both", False),
    ("[a] = 1 or [b] = 1", {"a": "0", "b": "1"}, "both", True),
    ("[a] = 1 Or [b] = 1", {"a": "0", "b": "0"}, "both", False),
    ("[a] = 1 or [b] = 1 and [c] = 1", {"a": "1", "b": "0", "c": "0"}, "both", True),  # and binds tighter
    ("([a] = 1 or [b] = 1) and [c] = 1", {"a": "1", "b": "0", "c": "0"}, "both", False),
    ("not [a] = 1", {"a": "1"}, "both", False),
    ("NOT ([a] = 1 and [b] = 1)", {"a": "1", "b": "0"}, "both", True),
    ("not [a] = 1", {"a": B}, "redcap", True),
    ("not [a] = 1", {"a": B}, "kleene", None),
    # kleene truth tables with unknown (blank a)
    ("[a] = 1 and [b] = 1", {"a": B, "b": "0"}, "kleene", False),  # false and unknown = false
    ("[a] = 1 and [b] = 1", {"a": B, "b": "1"}, "kleene", None),  # true and unknown = unknown
    ("[a] = 1 or [b] = 1", {"a": B, "b": "1"}, "kleene", True),  # true or unknown = true
    ("[a] = 1 or [b] = 1", {"a": B, "b": "0"}, "kleene", None),  # false or unknown = unknown
    ("[a] = 1 and [b] = 1", {"a": B, "b": "1"}, "redcap", False),
    ("[a] = 1 or [b] = 1", {"a": B, "b": "0"}, "redcap", False),
    ("[a] = 1 or [b] = 1", {"a": B, "b": B}, "kleene", None),
    ("true", {"a": "1"}, "both", True),
    ("false or [a] = 1", {"a": "1"}, "both", True),
    # ---- arithmetic
    ("[a] + [b]", {"a": "2", "b": "3"}, "both", 5),
    ("[a] - [b]", {"a": "2", "b": "3"}, "both", -1),
    ("[a] * [b]", {"a": "2", "b": "3"}, "both", 6),
    ("[a] / [b]", {"a": "3", "b": "2"}, "both", 1.5),
    ("[a] + [b]", {"a": "2", "b": B}, "both", None),  # + with a blank gives blank
    ("[a] * [b]", {"a": B, "b": "3"}, "both", None),
    ("[a] / [b]", {"a": "3", "b": "0"}, "both", None),  # division by zero gives blank
    ("([a])^(2)", {"a": "3"}, "both", 9),
    ("(2)^(0.5)", {"a": "3"}, "both", 2**0.5),
    ("-2^2", {"a": "3"}, "both", -4),
    ("1 + 2 * 3", {"a": "3"}, "both", 7),
    ("(1 + 2) * 3", {"a": "3"}, "both", 9),
    ("10 - 4 - 3", {"a": "3"}, "both", 3),
    ("-[a] + 1", {"a": "3"}, "both", -2),
    ("[a] + 1", {"a": "abc"}, "both", None),  # non-numeric text is not a number
    ("([a] = 1) + ([b] = 1)", {"a": "1", "b": "1"}, "both", 2),
    ("[a] + 1 > 2 and [b] * 2 = 4", {"a": "2", "b": "2"}, "both", True),
    # ---- sum/mean/min/max/median/stdev skip blanks
    ("sum([a], [b], [c])", {"a": "1", "b": B, "c": "3"}, "both", 4),
    ("sum([a], [b])", {"a": B, "b": B}, "both", None),  # no data is not zero (documented)
    ("mean([a], [b], [c])", {"a": "1", "b": B, "c": "4"}, "both", 2.5),
    ("min([a], [b], [c])", {"a": "5", "b": B, "c": "4"}, "both", 4),
    ("max([a], [b], [c])", {"a": "5", "b": B, "c": "4"}, "both", 5),
    ("median([a], [b], [c], 10)", {"a": "1", "b": B, "c": "3"}, "both", 3),
    ("median(1, 2, 3, 4)", {"a": "1"}, "both", 2.5),
    ("stdev(2, 4, 4, 4, 5, 5, 7, 9)", {"a": "1"}, "both", 2.138089935299395),  # sample sd
    ("stdev([a], [b], 1)", {"a": "3", "b": B}, "both", 2**0.5),
    ("sum([a], [b]) >= 3", {"a": "3", "b": B}, "both", True),
    ("[a] + [b] >= 3", {"a": "3", "b": B}, "redcap", False),
    ("[a] + [b] >= 3", {"a": "3", "b": B}, "kleene", None),
    # ---- if
    ("if([a] > 1, 'big', 'small')", {"a": "2"}, "both", "big"),
    ("if([a] > 1, 'big', 'small')", {"a": "0"}, "both", "small"),
    ("if([a] > 1, 'big', 'small')", {"a": B}, "redcap", "small"),
    ("if([a] > 1, 'big', 'small')", {"a": B}, "kleene", None),
    ("if([a] = 1, 10, '')", {"a": "2"}, "both", None),
    ("if([a] = 1, 10, 20) + 1", {"a": "1"}, "both", 11),
    ("if([a], 1, 0)", {"a": "5"}, "both", 1),
    ("if([a], 1, 0)", {"a": "0"}, "both", 0),
    # ---- datediff: years of 365.2425 days, unsigned unless asked
    ("datediff([d1], [d2], 'd')", {"d1": "2024-02-28", "d2": "2024-03-01"}, "both", 2),  # leap year
    ("datediff([d1], [d2], 'd')", {"d1": "2023-02-28", "d2": "2023-03-01"}, "both", 1),
    ("datediff([d1], [d2], 'y')", {"d1": "2000-01-01", "d2": "2001-01-01"}, "both", 366 / 365.2425),
    ("datediff([d1], [d2], 'y')", {"d1": "2001-01-01", "d2": "2002-01-01"}, "both", 365 / 365.2425),
    ("datediff([d1], [d2], 'M')", {"d1": "2024-01-01", "d2": "2024-03-01"}, "both", 60 / 30.44),
    ("datediff([d2], [d1], 'd')", {"d1": "2024-01-01", "d2": "2024-01-11"}, "both", 10),  # unsigned
    ("datediff([d2], [d1], 'd', true)", {"d1": "2024-01-01", "d2": "2024-01-11"}, "both", -10),
    ("datediff([d1], [d2], 'd', true)", {"d1": "2024-01-01", "d2": "2024-01-11"}, "both", 10),
    ("datediff([d1], [d2], 'd', 'ymd', true)", {"d1": "2024-01-11", "d2": "2024-01-01"}, "both", -10),
    ("datediff([d1], [d2], 'h')", {"d1": "2024-01-01 08:00", "d2": "2024-01-01 20:30"}, "both", 12.5),
    ("datediff([d1], [d2], 'm')", {"d1": "2024-01-01 08:00", "d2": "2024-01-01 08:45"}, "both", 45),
    ("datediff([d1], [d2], 's')", {"d1": "2024-01-01 08:00", "d2": "2024-01-01 08:01"}, "both", 60),
    ("datediff([d1], 'today', 'd')", {"d1": "2024-02-01"}, "both", 29),  # as_of 2024-03-01 (leap February)
    ("datediff([d1], 'now', 'h')", {"d1": "2024-03-01 00:30"}, "both", 12),
    ("datediff([d1], today, 'd')", {"d1": "2024-02-29"}, "both", 1),
    ("datediff([d1], [d2], 'd')", {"d1": "2024-01-01", "d2": B}, "both", None),
    ("datediff([d1], '2024-03-01', 'd') <= 14", {"d1": "2024-02-16"}, "both", True),
    ("datediff([d1], [d2], 'd', 'mdy')", {"d1": "01-31-2024", "d2": "02-02-2024"}, "both", 2),  # legacy format
    # age: calendar years; 29 February birthdays reached on 1 March in common years
    ("age_at_date([dob], [d])", {"dob": "2000-03-01", "d": "2018-02-28"}, "both", 17),
    ("age_at_date([dob], [d])", {"dob": "2000-03-01", "d": "2018-03-01"}, "both", 18),
    ("age_at_date([dob], [d])", {"dob": "2000-02-29", "d": "2018-02-28"}, "both", 17),
    ("age_at_date([dob], [d])", {"dob": "2000-02-29", "d": "2018-03-01"}, "both", 18),
    ("age_at_date([dob], 'today')", {"dob": "1949-03-02"}, "both", 74),
    ("age_at_date([dob], 'today') >= 18 and age_at_date([dob], 'today') <= 75", {"dob": B}, "kleene", None),
    ("rounddown(datediff([dob], 'today', 'y'))", {"dob": "2006-03-01"}, "both", 18),  # 6575 days = 18.002 y
    ("year([d]) * 10000 + month([d]) * 100 + day([d])", {"d": "2024-02-29"}, "both", 20240229),
    # dates compare as dates
    ("[d] <= '2024-03-01'", {"d": "2024-02-29"}, "both", True),
    ("[d1] < [d2]", {"d1": "2024-01-05", "d2": "2023-12-31"}, "both", False),
    ("[d] = '2024-02-29'", {"d": "2024-02-29"}, "both", True),
    ("[d] = 'soon'", {"d": B}, "redcap", False),  # text that is no date compares as text: blank <> 'soon'
    ("[d] <> 'soon'", {"d": "2024-02-29"}, "both", True),
    # ---- rounding: half away from zero
    ("round(2.5)", {"a": "1"}, "both", 3),
    ("round(-2.5)", {"a": "1"}, "both", -3),
    ("round(0.5)", {"a": "1"}, "both", 1),
    ("round(1.005, 2)", {"a": "1"}, "both", 1.01),
    ("round(2.675, 2)", {"a": "1"}, "both", 2.68),
    ("round([a], 1)", {"a": "3.14159"}, "both", 3.1),
    ("round(1234.5, -2)", {"a": "1"}, "both", 1200),
    ("round([a])", {"a": B}, "both", None),
    ("roundup(1.21, 1)", {"a": "1"}, "both", 1.3),
    ("roundup(1.1 * 100)", {"a": "1"}, "both", 110),  # binary noise is not rounded up
    ("roundup(-1.21, 1)", {"a": "1"}, "both", -1.2),
    ("rounddown(1.29, 1)", {"a": "1"}, "both", 1.2),
    ("rounddown(-1.21, 1)", {"a": "1"}, "both", -1.3),
    ("rounddown([a] / 7)", {"a": "41"}, "both", 5),
    # ---- maths
    ("abs([a])", {"a": "-4.5"}, "both", 4.5),
    ("sqrt([a])", {"a": "16"}, "both", 4),
    ("sqrt([a])", {"a": "-1"}, "both", None),
    ("exponential(1)", {"a": "1"}, "both", 2.718281828459045),
    ("log(100, 10)", {"a": "1"}, "both", 2),
    ("log(exponential(2))", {"a": "1"}, "both", 2),
    ("log(0)", {"a": "1"}, "both", None),
    ("mod(10, 3)", {"a": "1"}, "both", 1),
    ("mod(-10, 3)", {"a": "1"}, "both", -1),
    ("mod(10, 0)", {"a": "1"}, "both", None),
    ("[vs_weight_kg] / (([vs_height_cm] / 100)^(2))", {"vs_weight_kg": "81", "vs_height_cm": "180"}, "both", 25),
    # ---- number tests and missing codes (project codes UNK, NA)
    ("isnumber([a])", {"a": "12.5"}, "both", True),
    ("isnumber([a])", {"a": "abc"}, "both", False),
    ("isnumber([a])", {"a": B}, "both", False),
    ("isinteger([a])", {"a": "12"}, "both", True),
    ("isinteger([a])", {"a": "12.5"}, "both", False),
    ("isinteger([a])", {"a": "x"}, "both", False),
    ("isblankormissingcode([a])", {"a": B}, "both", True),
    ("isblankormissingcode([a])", {"a": "UNK"}, "both", True),
    ("isblankormissingcode([a])", {"a": "3"}, "both", False),
    ("isblanknotmissingcode([a])", {"a": "UNK"}, "both", False),
    ("isblanknotmissingcode([a])", {"a": B}, "both", True),
    ("ismissingcode([a])", {"a": "NA"}, "both", True),
    ("ismissingcode([a])", {"a": B}, "both", False),
    ("hasmissingcode([a], 'NA')", {"a": "UNK"}, "both", False),
    ("hasmissingcode([a], 'UNK,NA')", {"a": "UNK"}, "both", True),
    ("not isblankormissingcode([a])", {"a": B}, "kleene", False),  # a blank test is never unknown
    # ---- text functions
    ("contains([t], 'SERT')", {"t": "Sertraline"}, "both", True),
    ("contains([t], 'xyz')", {"t": "Sertraline"}, "both", False),
    ("contains([t], 'x')", {"t": B}, "redcap", False),
    ("contains([t], 'x')", {"t": B}, "kleene", None),
    ("not_contain([t], 'LINE')", {"t": "Sertraline"}, "both", False),
    ("starts_with([t], 'ser')", {"t": "Sertraline"}, "both", True),
    ("ends_with([t], 'INE')", {"t": "Sertraline"}, "both", True),
    ("ends_with([t], 'ser')", {"t": "Sertraline"}, "both", False),
    ("left([t], 3)", {"t": "Sertraline"}, "both", "Ser"),
    ("right([t], 4)", {"t": "Sertraline"}, "both", "line"),
    ("mid([t], 2, 3)", {"t": "Sertraline"}, "both", "ert"),
    ("length([t])", {"t": "Sertraline"}, "both", 10),
    ("length([t])", {"t": B}, "both", 0),
    ("trim([t])", {"t": "  ab c "}, "both", "ab c"),
    ("upper([t])", {"t": "abc"}, "both", "ABC"),
    ("lower([t])", {"t": "AbC"}, "both", "abc"),
    ("find('TRA', [t])", {"t": "Sertraline"}, "both", 4),
    ("find('zz', [t])", {"t": "Sertraline"}, "both", 0),
    ("replace_text([t], 'a', 'o')", {"t": "banana"}, "both", "bonono"),
    ("concat([a], '-', [b])", {"a": "x", "b": B}, "both", "x-"),
    ("concat([a], [b])", {"a": "1", "b": "2"}, "both", "12"),
    ("concat_ws(', ', [a], [b], [c])", {"a": "x", "b": B, "c": "z"}, "both", "x, z"),
    ("upper(left([t], 1)) = 'S'", {"t": "sertraline"}, "both", True),
    # ---- checkbox options ([cb(code)] reads column cb___code, '1' checked / '0' unchecked)
    ("[cb(1)] = '1'", {"cb___1": "1"}, "both", True),
    ("[cb(1)] = 1", {"cb___1": "1"}, "both", True),
    ("[cb(1)] = '1'", {"cb___1": "0"}, "both", False),
    ("[cb(2)] = '0'", {"cb___2": "0"}, "both", True),
    ("[cb(-4)] = '1'", {"cb____4": "1"}, "both", True),  # '-4' -> suffix '_4'
    ("[cb(ABC)] = '1'", {"cb___abc": "1"}, "both", True),  # codes are lower-cased
    ("[cb(1)] = '1' or [cb(2)] = '1'", {"cb___1": "0", "cb___2": "1"}, "both", True),
    ("sum([cb(1)], [cb(2)], [cb(3)])", {"cb___1": "1", "cb___2": "0", "cb___3": "1"}, "both", 2),
    # ---- comments and newlines
    ("[a] = 1 # first\n and [b] = 2 // second", {"a": "1", "b": "2"}, "both", True),
    ("[a] = 1\nor\n[b] = 2", {"a": "0", "b": "2"}, "both", True),
]
