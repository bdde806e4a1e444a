"""A local REDCap-API-compatible server backed by SQLite.

    from trialkit.redcap.sandbox import ProjectSpec, running_sandbox
    with running_sandbox(ProjectSpec.from_dictionary_csv("dd.csv")) as sb:
        proj = sb.project()          # a PyCap redcap.Project on sb.url with sb.token
"""

from trialkit.redcap.sandbox.faults import FaultPlan
from trialkit.redcap.sandbox.project import ProjectSpec
from trialkit.redcap.sandbox.server import Sandbox, running_sandbox

__all__ = ["FaultPlan", "ProjectSpec", "Sandbox", "running_sandbox"]
