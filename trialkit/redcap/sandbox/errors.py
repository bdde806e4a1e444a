"""The error a request handler raises to make the server answer as REDCap does (status + verbatim message)."""

from __future__ import annotations

# Verbatim REDCap messages (shared/reference/redcap-api.md §1.2).
NO_API_RIGHTS = "You do not have permissions to use the API"
NO_IMPORT_RIGHTS = "You do not have API Import/Update privileges"
BAD_CONTENT = 'The value of the parameter "content" is not valid'
OUT_OF_MEMORY = (
    "REDCap ran out of server memory. The request cannot be processed. "
    "Please try importing/exporting a smaller amount of data."
)


class ApiError(Exception):
    """A request REDCap would refuse. `status` is the HTTP status; `message` goes into the error body."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def quoted_list(values: list[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def invalid_values(parameter: str, values: list[str]) -> ApiError:
    return ApiError(f'The following values in the parameter "{parameter}" are not valid: {quoted_list(values)}')
