"""Role ordering (by rank, never alphabetical) and what TokenClaims derive from the claims."""

from __future__ import annotations

import pytest

from flightdeck_common.auth import Role, TokenClaims, TokenUse


def test_roles_order_by_rank_not_alphabetically() -> None:
    # As plain strings "admin" < "operator" < "viewer": exactly backwards.
    assert Role.VIEWER < Role.OPERATOR < Role.ADMIN
    assert Role.ADMIN > Role.VIEWER
    assert Role.OPERATOR >= Role.OPERATOR
    assert not Role.ADMIN <= Role.OPERATOR
    assert sorted([Role.ADMIN, Role.VIEWER, Role.OPERATOR]) == [
        Role.VIEWER,
        Role.OPERATOR,
        Role.ADMIN,
    ]
    assert max([Role.VIEWER, Role.ADMIN, Role.OPERATOR]) is Role.ADMIN


def test_roles_compare_with_role_names_in_either_order() -> None:
    assert Role.VIEWER < "admin"
    assert "admin" > Role.VIEWER  # noqa: SIM300 (the reflected operator is the point)
    assert "viewer" < Role.OPERATOR  # noqa: SIM300
    with pytest.raises(ValueError, match="superuser"):
        _ = Role.ADMIN > "superuser"


def test_role_is_still_its_string() -> None:
    assert Role.OPERATOR == "operator"
    assert {"operator": 1}[Role.OPERATOR] == 1
    assert f"{Role.ADMIN}" == "admin"


@pytest.mark.parametrize(
    ("role", "minimum", "granted"),
    [
        (Role.VIEWER, Role.VIEWER, True),
        (Role.VIEWER, Role.OPERATOR, False),
        (Role.OPERATOR, "viewer", True),
        (Role.OPERATOR, Role.ADMIN, False),
        (Role.ADMIN, Role.OPERATOR, True),
    ],
)
def test_at_least(role: Role, minimum: Role | str, granted: bool) -> None:
    assert role.at_least(minimum) is granted


def test_service_claims_have_no_role_and_expose_the_client_id() -> None:
    claims = TokenClaims(
        sub="svc:admin",
        jti="j",
        iat=1_700_000_000,
        exp=1_700_000_900,
        aud=("flightdeck:auth-revocations",),
        token_use=TokenUse.SERVICE,
    )
    assert claims.client_id == "admin"
    assert claims.user_id is None
    assert not claims.has_role(Role.VIEWER)
    assert claims.expires_at.isoformat() == "2023-11-14T22:28:20+00:00"
