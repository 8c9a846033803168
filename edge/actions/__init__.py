"""Allow-listed writes to the plant (issue 18 item 4): settings, policy, service. See docs/actions.md."""

from .policy import Outcome, Reason
from .service import ActionRequest, ActionResult, ActionService, RequestSource
from .settings import ActionMode, ActionsSettings, ActionTarget

__all__ = ["ActionMode", "ActionRequest", "ActionResult", "ActionService", "ActionTarget", "ActionsSettings",
           "Outcome", "Reason", "RequestSource"]
