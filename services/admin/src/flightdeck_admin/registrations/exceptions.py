"""Errors of registration requests and their signed review."""

from flightdeck_common.errors import BadRequest, Conflict, Forbidden, NotFound


class RegistrationRequestNotFound(NotFound):
    code = "registration_request_not_found"
    title = "Registration request not found"


class UsernameUnavailable(Conflict):
    """One answer whether the name is taken or already requested: which one is not told."""

    code = "username_unavailable"
    title = "Username unavailable"


class InvalidSignedAt(BadRequest):
    code = "invalid_signed_at"
    title = "signed_at is not a usable timestamp"


class SignatureExpired(BadRequest):
    code = "signature_expired"
    title = "signed_at is too far from the server time"


class InvalidSignatureEncoding(BadRequest):
    code = "invalid_signature_encoding"
    title = "signature is not valid base64"


class SignatureReplayed(Conflict):
    code = "signature_replayed"
    title = "This signature has already been used"


class RequestAlreadyDecided(Conflict):
    code = "request_already_decided"
    title = "The registration request is not open for this decision"


class ApprovalMayHaveSucceeded(Conflict):
    code = "approval_may_have_succeeded"
    title = "An interrupted approval may have created the account"


class ApprovalKeyRequired(Forbidden):
    code = "approval_key_required"
    title = "Register an approval key first"


class InvalidDecisionSignature(Forbidden):
    code = "invalid_signature"
    title = "The signature does not verify with your approval key"
