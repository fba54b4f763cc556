"""Pure security building blocks of the auth service: TOTP, secrets at rest, approval keys,
login risk and failed-login throttling. Nothing here touches the database or HTTP."""
