"""Problems of the user directory: raised by auth, passed on as-is by admin.

Both services answer them with the same status, code and title, so they are declared
once here (admin maps auth's problem ``code`` back to these classes).
"""

from __future__ import annotations

from flightdeck_common.errors import Conflict, FlightdeckError, Forbidden, NotFound


class UserNotFound(NotFound):
    code = "user_not_found"
    title = "User not found"


class UsernameTaken(Conflict):
    code = "username_taken"
    title = "Username already exists"


class LastAdmin(Conflict):
    code = "last_admin"
    title = "The last active admin cannot be demoted or deactivated"


class ApprovalKeyNotFound(NotFound):
    code = "approval_key_not_found"
    title = "The user has no approval key"


class SignedApprovalRequired(Forbidden):
    code = "signed_approval_required"
    title = "Creating an admin needs the signed approval it comes from"


class InvalidSignedApproval(Forbidden):
    code = "invalid_signed_approval"
    title = "The signed approval does not hold"


class ActingAdminRequired(Forbidden):
    code = "acting_admin_required"
    title = "Making a user an admin needs the acting admin's own token"


USER_DIRECTORY_PROBLEMS: tuple[type[FlightdeckError], ...] = (
    UserNotFound,
    UsernameTaken,
    LastAdmin,
    ApprovalKeyNotFound,
    SignedApprovalRequired,
    InvalidSignedApproval,
    ActingAdminRequired,
)
