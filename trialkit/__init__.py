"""trialkit: clinical-trial eligibility screening and data capture over REDCap logic."""

__version__ = "0.1.0"
