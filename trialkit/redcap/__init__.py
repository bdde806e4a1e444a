"""Everything REDCap-shaped: the PyCap client wrapper, sync, and the local REDCap-compatible sandbox server."""
