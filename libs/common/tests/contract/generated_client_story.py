"""Issue 7's end-to-end story, told with the generated clients only.

Run by ``test_generated_client_story.py`` in a child interpreter whose ``PYTHONPATH`` holds
the three client projects generated from ``openapi/`` (so the packages are imported from
there and never enter the test process). Every API call goes through
``flightdeck_{auth,pipeline,admin}_client``; besides them this script only computes what a
real integrator computes by hand: argon2 hashes for the internal user API, TOTP codes, an RSA
approval signature and GitHub's HMAC webhook signature.

    python generated_client_story.py '<json: see StoryInput in the test>'

Progress goes to stderr; the last stdout line is a JSON summary the test checks again.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import sys
import time
import uuid
from collections.abc import Generator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import flightdeck_admin_client
import flightdeck_auth_client
import flightdeck_pipeline_client
import httpx
import pyotp
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from flightdeck_admin_client.api.audit import list_audit_events, verify_audit_chain
from flightdeck_admin_client.api.registrations import (
    approve_registration_request,
    create_registration_request,
    list_registration_requests,
)
from flightdeck_admin_client.api.users import read_user
from flightdeck_admin_client.models import (
    ApprovalDecision,
    AuditEventRead,
    ChainVerification,
    PageAuditEventRead,
    PageRegistrationRequestRead,
    RegistrationCreate,
    RegistrationRequestFiled,
    RegistrationRequestRead,
    RequestStatus,
)
from flightdeck_admin_client.models import Problem as AdminProblem
from flightdeck_admin_client.models import Role as AdminRole
from flightdeck_admin_client.models import UserRead as AdminUserRead
from flightdeck_auth_client.api.internal import create_internal_user
from flightdeck_auth_client.api.login import login, login_mfa
from flightdeck_auth_client.api.me import (
    confirm_totp_enrolment,
    set_my_approval_key,
    start_totp_enrolment,
)
from flightdeck_auth_client.api.service_accounts import (
    create_service_account,
    create_service_token,
    list_service_accounts,
)
from flightdeck_auth_client.models import (
    ApprovalKeyUpdate,
    BodyCreateServiceToken,
    InternalUserCreate,
    LoginRequest,
    MfaLoginRequest,
    PageServiceAccountRead,
    Role,
    ServiceAccountCreate,
    ServiceAccountCreateAudiencesItem,
    ServiceAccountCreated,
    ServiceToken,
    TokenPair,
    TotpCode,
    TotpEnrolment,
    UserRead,
)
from flightdeck_auth_client.models import Problem as AuthProblem
from flightdeck_pipeline_client.api.deployments import list_deployments
from flightdeck_pipeline_client.api.metrics import read_dora, read_history, read_stats
from flightdeck_pipeline_client.api.runs import (
    append_pipeline_logs,
    list_pipeline_logs,
    list_pipelines,
    upsert_pipeline,
)
from flightdeck_pipeline_client.api.webhooks import receive_github_webhook
from flightdeck_pipeline_client.models import (
    Conclusion,
    DisplayStatus,
    DoraReport,
    LogLevel,
    LogLineCreate,
    LogLineRead,
    LogLinesCreate,
    PageDeploymentRead,
    PageLogLineRead,
    PageRunRead,
    ReceiveGithubWebhookBody,
    RunHistory,
    RunRead,
    RunStats,
    RunStatus,
    RunUpsert,
    WebhookAck,
    WebhookAckResult,
)
from flightdeck_pipeline_client.models import Problem as PipelineProblem

from flightdeck_common.passwords import PasswordHasher

T = TypeVar("T")
AUDIT_TIMEOUT = 30.0  # outbox relays poll every second; the stack caps their backoff at 2 s
MAPPING_TIMEOUT = 30.0  # webhook deliveries are mapped behind the answer, typically at once


def expect(response: Any, status: int, model: type[T]) -> T:
    """The parsed body of ``response``, which must have ``status`` and parse as ``model``."""
    parsed = response.parsed
    if int(response.status_code) != status or not isinstance(parsed, model):
        body = response.content[:2000].decode("utf-8", "replace")
        raise AssertionError(
            f"expected {status} {model.__name__}, got {int(response.status_code)} "
            f"{type(parsed).__name__}: {body}"
        )
    return parsed


def check(condition: bool, what: str, *details: Any) -> None:
    if not condition:
        raise AssertionError(f"{what}: {details}")


class Story:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.started = time.monotonic()
        self.base_url: str = config["ingress_url"]
        self.tag = secrets.token_hex(4)
        self.summary: dict[str, Any] = {"steps": {}}
        self._last = self.started

    # -- plumbing -----------------------------------------------------------------------

    def step(self, name: str) -> None:
        now = time.monotonic()
        self.summary["steps"][name] = round(now - self._last, 3)
        self._last = now
        print(f"[{now - self.started:6.2f}s] {name}", file=sys.stderr, flush=True)

    def _options(self, base_url: str | None = None) -> dict[str, Any]:
        return {
            "base_url": base_url or self.base_url,
            "timeout": httpx.Timeout(15.0),
            # An undocumented status code raises errors.UnexpectedStatus: the schema is exact.
            "raise_on_unexpected_status": True,
            "httpx_args": {"trust_env": False},
        }

    def anonymous(self, package: Any) -> Any:
        return package.Client(**self._options())

    def bearer(self, package: Any, token: str) -> Any:
        return package.AuthenticatedClient(token=token, **self._options())

    def internal(self, token: str) -> Any:
        """A client of auth's internal API, where the services reach it (not the ingress)."""
        url = self.config.get("auth_internal_url") or self.base_url
        return flightdeck_auth_client.AuthenticatedClient(token=token, **self._options(url))

    # -- the story ----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.bootstrap_admin_logs_in_with_mfa()
        self.bootstrap_admin_creates_a_service_account()
        self.service_account_creates_users()
        self.bootstrap_admin_checks_the_new_users()
        self.registration_is_filed_signed_and_approved()
        self.operator_logs_in()
        self.github_webhooks_create_runs_and_a_deployment()
        self.operator_posts_a_manual_run_with_logs()
        self.viewer_reads_stats_history_and_dora()
        self.audit_log_has_the_story_and_verifies()
        self.summary["total_seconds"] = round(time.monotonic() - self.started, 3)
        return self.summary

    def fresh_totp_code(self) -> str:
        """The bootstrap admin's next unused TOTP code (a code is accepted once, within a
        step of the clock): waits for the next 30 s step when the current one is spent."""
        step = self.last_totp_step + 1
        while step > int(time.time() // 30) + 1:
            time.sleep(0.5)
        self.last_totp_step = step
        return str(self.totp.at(step * 30))

    def bootstrap_admin_creates_a_service_account(self) -> None:
        """Over HTTP, as an admin with MFA: the secret is in the answer, once."""
        self.service_client_id = f"story-bot-{self.tag}"
        created = expect(
            create_service_account.sync_detailed(
                client=self.reviewer_auth,
                body=ServiceAccountCreate(
                    client_id=self.service_client_id,
                    audiences=[ServiceAccountCreateAudiencesItem.FLIGHTDECKAUTH_USERS],
                    description="generated client story",
                    current_password=self.config["bootstrap_admin"][1],
                    totp_code=self.fresh_totp_code(),
                ),
            ),
            201,
            ServiceAccountCreated,
        )
        check(created.is_active and len(created.client_secret) >= 40, "created", created)
        self.service_client_secret = created.client_secret
        # A taken id is refused before the step-up is checked (no code is spent on it).
        again = create_service_account.sync_detailed(
            client=self.reviewer_auth,
            body=ServiceAccountCreate(
                client_id=self.service_client_id,
                audiences=[ServiceAccountCreateAudiencesItem.FLIGHTDECKAUTH_USERS],
                current_password=self.config["bootstrap_admin"][1],
                totp_code="000000",
            ),
        )
        check(expect(again, 409, AuthProblem).code == "service_account_exists", "409", again)
        listed = expect(
            list_service_accounts.sync_detailed(client=self.reviewer_auth, limit=200),
            200,
            PageServiceAccountRead,
        )
        mine = [a for a in listed.items if a.client_id == self.service_client_id]
        check(len(mine) == 1 and mine[0].description == "generated client story", "list", mine)
        self.step("bootstrap admin creates a service account")

    def service_account_creates_users(self) -> None:
        """The new service account trades its credentials for a token and creates two users."""
        auth = self.anonymous(flightdeck_auth_client)
        client_id, client_secret = self.service_client_id, self.service_client_secret
        token = expect(
            create_service_token.sync_detailed(
                client=auth,
                body=BodyCreateServiceToken(
                    grant_type="client_credentials",
                    client_id=client_id,
                    client_secret=client_secret,
                ),
            ),
            200,
            ServiceToken,
        )
        service = self.internal(token.access_token)
        wrong = create_service_token.sync_detailed(
            client=auth,
            body=BodyCreateServiceToken(
                grant_type="client_credentials", client_id=client_id, client_secret="wrong"
            ),
        )
        expect(wrong, 401, AuthProblem)

        hasher = PasswordHasher()
        # A service token alone cannot make an admin: that needs a signed approval.
        refused = create_internal_user.sync_detailed(
            client=service,
            body=InternalUserCreate(
                username=f"story-admin-{self.tag}",
                password_hash=asyncio.run(hasher.hash(f"story-passphrase-{self.tag}-x")),
                role=Role.ADMIN,
                actor="generated-client-story",
            ),
        )
        problem = expect(refused, 403, AuthProblem)
        check(problem.code == "signed_approval_required", "admin refused", problem.to_dict())
        self.users: dict[str, tuple[str, str, int]] = {}
        for role in (Role.OPERATOR, Role.VIEWER):
            username = f"story-made-{role.value}-{self.tag}"
            password = f"story-passphrase-{secrets.token_urlsafe(12)}"
            body = InternalUserCreate(
                username=username,
                password_hash=asyncio.run(hasher.hash(password)),
                role=role,
                actor="generated-client-story",
                idempotency_key=f"story-{role.value}-{self.tag}",
            )
            created = expect(
                create_internal_user.sync_detailed(client=service, body=body), 201, UserRead
            )
            check(created.role == role and not created.mfa_enabled, "created", created.to_dict())
            again = create_internal_user.sync_detailed(client=service, body=body)
            check(expect(again, 200, UserRead).id == created.id, "idempotent create", again)
            self.users[role.value] = (username, password, created.id)
        self.step("service account creates an operator and a viewer, not an admin")

    def bootstrap_admin_logs_in_with_mfa(self) -> None:
        """The bootstrap admin of a fresh stack logs in, enrols TOTP, logs in again with a
        second factor and registers the RSA key it signs approvals with."""
        auth = self.anonymous(flightdeck_auth_client)
        username, password = self.config["bootstrap_admin"]
        credentials = LoginRequest(username=username, password=password)
        first = expect(login.sync_detailed(client=auth, body=credentials), 200, TokenPair)
        enrolling = self.bearer(flightdeck_auth_client, first.access_token)
        enrolment = expect(start_totp_enrolment.sync_detailed(client=enrolling), 201, TotpEnrolment)
        check(enrolment.otpauth_uri.startswith("otpauth://totp/"), "otpauth uri", enrolment)
        totp = pyotp.TOTP(enrolment.secret)
        self.totp = totp
        confirmed_at = time.time()
        # The previous step's code confirms, so the current and the next stay fresh.
        confirmed = confirm_totp_enrolment.sync_detailed(
            client=enrolling, body=TotpCode(code=totp.at(confirmed_at - 30))
        )
        check(expect(confirmed, 200, UserRead).mfa_enabled, "mfa enabled", confirmed)

        challenged = expect(login.sync_detailed(client=auth, body=credentials), 401, AuthProblem)
        check(challenged.code == "mfa_required", "mfa challenge", challenged.to_dict())
        mfa_token = challenged.additional_properties["mfa_token"]
        wrong = login_mfa.sync_detailed(
            client=auth, body=MfaLoginRequest(mfa_token=mfa_token, code="000000")
        )
        expect(wrong, 401, AuthProblem)
        # The current step's code: the one used to confirm is spent (no replay).
        self.last_totp_step = int(confirmed_at // 30)
        pair = expect(
            login_mfa.sync_detailed(
                client=auth,
                body=MfaLoginRequest(mfa_token=mfa_token, code=totp.at(confirmed_at)),
            ),
            200,
            TokenPair,
        )
        check(pair.user.mfa_enabled and pair.user.role == Role.ADMIN, "reviewer", pair.user)
        check(pair.user.username == username, "bootstrap admin", pair.user)
        self.bootstrap_admin_token = pair.access_token
        self.reviewer_auth = self.bearer(flightdeck_auth_client, pair.access_token)
        self.reviewer_admin = self.bearer(flightdeck_admin_client, pair.access_token)

        self.approval_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = self.approval_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        keyed = expect(
            set_my_approval_key.sync_detailed(
                client=self.reviewer_auth,
                body=ApprovalKeyUpdate(
                    public_key_pem=pem.decode(),
                    current_password=password,
                    totp_code=self.fresh_totp_code(),
                ),
            ),
            200,
            UserRead,
        )
        check(keyed.has_approval_key is True, "approval key registered", keyed.to_dict())
        self.key_fingerprint = keyed.approval_key_fingerprint
        self.step("bootstrap admin enrols TOTP, logs in with MFA, registers an approval key")

    def bootstrap_admin_checks_the_new_users(self) -> None:
        admin = self.reviewer_admin
        for role, (username, _, user_id) in self.users.items():
            user = expect(read_user.sync_detailed(user_id, client=admin), 200, AdminUserRead)
            check(
                (user.username, user.role.value, user.mfa_enabled, user.is_active)
                == (username, role, False, True),
                "user as admin sees it",
                user.to_dict(),
            )
        self.step("an admin reads the new users through the admin API")

    def registration_is_filed_signed_and_approved(self) -> None:
        admin = self.anonymous(flightdeck_admin_client)
        self.operator = (f"story-operator-{self.tag}", f"a-long-passphrase-{self.tag}-ops")
        username, password = self.operator
        filed = expect(
            create_registration_request.sync_detailed(
                client=admin,
                body=RegistrationCreate(
                    username=username, password=password, reason="runs the release train"
                ),
            ),
            202,
            RegistrationRequestFiled,
        )
        check(filed.status == RequestStatus.PENDING, "filed", filed.to_dict())
        check("password" not in filed.to_dict(), "password echoed", filed.to_dict())
        auth = self.anonymous(flightdeck_auth_client)
        early = login.sync_detailed(
            client=auth, body=LoginRequest(username=username, password=password)
        )
        expect(early, 401, AuthProblem)

        pending = expect(
            list_registration_requests.sync_detailed(
                client=self.reviewer_admin, status=RequestStatus.PENDING, limit=200
            ),
            200,
            PageRegistrationRequestRead,
        )
        check(filed.id in {item.id for item in pending.items}, "pending list", filed.id)

        signed_at = datetime.now(UTC).isoformat()
        signature = self.approval_key.sign(
            f"{filed.id}:approve:operator:{username}:{signed_at}".encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
        decision = ApprovalDecision(
            signed_at=signed_at,
            signature=base64.b64encode(signature).decode(),
            note="welcome aboard",
            role=AdminRole.OPERATOR,
        )
        approved = expect(
            approve_registration_request.sync_detailed(
                filed.id, client=self.reviewer_admin, body=decision
            ),
            200,
            RegistrationRequestRead,
        )
        check(
            (approved.status, approved.role, approved.signed_at)
            == (RequestStatus.APPROVED, AdminRole.OPERATOR, signed_at),
            "approved",
            approved.to_dict(),
        )
        check(approved.user_id is not None, "account created", approved.to_dict())
        if self.key_fingerprint and approved.key_fingerprint:
            check(approved.key_fingerprint == self.key_fingerprint, "key", approved.to_dict())
        replay = approve_registration_request.sync_detailed(
            filed.id, client=self.reviewer_admin, body=decision
        )
        expect(replay, 409, AdminProblem)
        self.signature_sha256 = hashlib.sha256(signature).hexdigest()
        self.registration_id = filed.id
        self.step("registration request filed, signed and approved")

    def operator_logs_in(self) -> None:
        auth = self.anonymous(flightdeck_auth_client)
        username, password = self.operator
        pair = expect(
            login.sync_detailed(
                client=auth, body=LoginRequest(username=username, password=password)
            ),
            200,
            TokenPair,
        )
        check(pair.user.role == Role.OPERATOR, "operator role", pair.user.to_dict())
        self.operator_pipeline = self.bearer(flightdeck_pipeline_client, pair.access_token)
        viewer_name, viewer_password, _ = self.users["viewer"]
        viewer = expect(
            login.sync_detailed(
                client=auth, body=LoginRequest(username=viewer_name, password=viewer_password)
            ),
            200,
            TokenPair,
        )
        self.viewer_pipeline = self.bearer(flightdeck_pipeline_client, viewer.access_token)
        self.step("the new operator (and the viewer) log in")

    # -- GitHub -------------------------------------------------------------------------

    def _fixture(self, event: str, name: str) -> dict[str, Any]:
        path = Path(self.config["fixtures"]) / event / name
        payload: dict[str, Any] = json.loads(path.read_bytes())
        repository = payload["repository"]
        repository["full_name"] = self.repository
        repository["owner"]["login"], repository["name"] = self.repository.split("/")
        return payload

    def _webhook_client(self, secret: str) -> Any:
        # The schema declares the signature as an apiKey header (GitHubSignature), so the
        # generated AuthenticatedClient can carry it; but its value is an HMAC of the body,
        # and the client serializes the body itself. An httpx.Auth signs the exact bytes the
        # generated client sends (the placeholder token is replaced on every request).
        return flightdeck_pipeline_client.AuthenticatedClient(
            token="sha256=computed-per-request",
            prefix="",
            auth_header_name="X-Hub-Signature-256",
            **{
                **self._options(),
                "httpx_args": {"trust_env": False, "auth": GitHubSignature(secret)},
            },
        )

    def _deliver(
        self, client: Any, event: str, payload: dict[str, Any], delivery: str | None = None
    ) -> Any:
        return receive_github_webhook.sync_detailed(
            client=client,
            body=ReceiveGithubWebhookBody.from_dict(payload),
            x_git_hub_event=event,
            x_git_hub_delivery=delivery or str(uuid.uuid4()),
        )

    def github_webhooks_create_runs_and_a_deployment(self) -> None:
        self.repository = f"story-org/story-{self.tag}"
        github = self._webhook_client(self.config["webhook_secret"])
        now = datetime.now(UTC).replace(microsecond=0)

        def ago(minutes: int) -> str:
            """A GitHub timestamp ``minutes`` ago (the fixtures' own are years old)."""
            return (now - timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")

        base_id = 7_000_000_000 + secrets.randbelow(1_000_000_000)
        self.run_ids = {"green": base_id, "red": base_id + 1, "manual": base_id + 2}

        pong = expect(
            self._deliver(github, "ping", self._fixture("ping", "payload.json")), 200, WebhookAck
        )
        check(pong.result == WebhookAckResult.PONG, "ping", pong.to_dict())

        def workflow_run(name: str, run_id: int, started: int, updated: int) -> dict[str, Any]:
            payload = self._fixture("workflow_run", name)
            payload["workflow_run"].update(
                id=run_id, created_at=ago(started), run_started_at=ago(started), updated_at=ago(updated)
            )  # fmt: skip
            return payload

        green, red = self.run_ids["green"], self.run_ids["red"]
        requested = workflow_run("requested.payload.json", green, started=10, updated=10)
        completed = workflow_run("completed.payload.json", green, started=10, updated=6)
        failed = workflow_run("completed.payload.json", red, started=9, updated=7)
        failed["workflow_run"]["conclusion"] = "failure"
        deployment_id = base_id
        deployment = self._fixture("deployment", "payload.json")
        deployment["deployment"].update(id=deployment_id, created_at=ago(5), updated_at=ago(5))
        deployed = self._fixture("deployment_status", "payload.json")
        deployed["deployment"].update(id=deployment_id, created_at=ago(5), updated_at=ago(4))
        deployed["deployment_status"].update(id=base_id, created_at=ago(4), updated_at=ago(4))
        self.deployment = (deployment_id, deployment["deployment"]["sha"])

        deliveries = [
            ("workflow_run", requested),
            ("workflow_run", completed),
            ("workflow_run", failed),
            ("deployment", deployment),
            ("deployment_status", deployed),
        ]
        last_delivery = ""
        for event, payload in deliveries:
            last_delivery = str(uuid.uuid4())
            ack = expect(self._deliver(github, event, payload, last_delivery), 202, WebhookAck)
            check(ack.result == WebhookAckResult.ACCEPTED, event, ack.to_dict())
            check(ack.delivery_id == last_delivery, "delivery id", ack.to_dict())
        redelivered = expect(
            self._deliver(github, "deployment_status", deployed, last_delivery), 200, WebhookAck
        )
        check(redelivered.result == WebhookAckResult.DUPLICATE, "redelivery", redelivered)
        forged = self._deliver(self._webhook_client("not-the-secret"), "workflow_run", failed)
        expect(forged, 401, PipelineProblem)
        self.summary["webhooks"] = len(deliveries) + 3
        self.summary["mapped_after_seconds"] = round(self._wait_until_mapped(), 3)
        self.step("signed GitHub webhooks are accepted, then mapped into two runs and a deployment")

    def _wait_until_mapped(self) -> float:
        """The deliveries were acknowledged once stored; they are mapped behind the answer.
        Wait (bounded) until both runs are completed and the deployment succeeded, as an
        integrator would poll; the seconds it took."""
        started = time.monotonic()
        wanted = {self.run_ids["green"], self.run_ids["red"]}
        while True:
            runs = expect(
                list_pipelines.sync_detailed(
                    client=self.operator_pipeline, repository=self.repository, limit=50
                ),
                200,
                PageRunRead,
            )
            deployments = expect(
                list_deployments.sync_detailed(
                    client=self.operator_pipeline, repository=self.repository
                ),
                200,
                PageDeploymentRead,
            )
            completed = {run.run_id for run in runs.items if run.status == RunStatus.COMPLETED}
            deployed = [d for d in deployments.items if d.status.value == "success"]
            if completed >= wanted and deployed:
                return time.monotonic() - started
            check(
                time.monotonic() - started < MAPPING_TIMEOUT,
                "deliveries never mapped",
                [run.to_dict() for run in runs.items],
                [deployment.to_dict() for deployment in deployments.items],
            )
            time.sleep(0.2)

    # -- operator, viewer ---------------------------------------------------------------

    def operator_posts_a_manual_run_with_logs(self) -> None:
        runs = expect(
            list_pipelines.sync_detailed(
                client=self.operator_pipeline, repository=self.repository, limit=50
            ),
            200,
            PageRunRead,
        )
        by_id = {run.run_id: run for run in runs.items}
        check(set(by_id) == {self.run_ids["green"], self.run_ids["red"]}, "runs", sorted(by_id))
        green, red = by_id[self.run_ids["green"]], by_id[self.run_ids["red"]]
        check(
            (green.status, green.conclusion, green.display_status)
            == (RunStatus.COMPLETED, Conclusion.SUCCESS, DisplayStatus.SUCCESS),
            "green run",
            green.to_dict(),
        )
        check(red.display_status == DisplayStatus.FAILED, "red run", red.to_dict())
        check(green.duration_seconds == 240.0, "green duration", green.duration_seconds)

        manual = RunUpsert(
            repository=self.repository,
            run_id=self.run_ids["manual"],
            status=RunStatus.IN_PROGRESS,
            name="manual smoke test",
            branch="main",
            started_at=datetime.now(UTC) - timedelta(minutes=2),
        )
        forbidden = upsert_pipeline.sync_detailed(client=self.viewer_pipeline, body=manual)
        expect(forbidden, 403, PipelineProblem)
        run = expect(
            upsert_pipeline.sync_detailed(client=self.operator_pipeline, body=manual), 201, RunRead
        )
        check(run.display_status == DisplayStatus.RUNNING, "manual run", run.to_dict())
        lines = [
            LogLineCreate(message="checking out main", level=LogLevel.INFO),
            LogLineCreate(message="smoke tests: 12 passed", level=LogLevel.SUCCESS),
            LogLineCreate(message="latency above budget", level=LogLevel.WARNING),
        ]
        appended = append_pipeline_logs.sync_detailed(
            run.id, client=self.operator_pipeline, body=LogLinesCreate(lines=lines)
        )
        check(
            int(appended.status_code) == 201 and isinstance(appended.parsed, list),
            "logs appended",
            appended.content[:500],
        )
        check(all(isinstance(line, LogLineRead) for line in appended.parsed), "log lines")
        logs = expect(
            list_pipeline_logs.sync_detailed(run.id, client=self.viewer_pipeline),
            200,
            PageLogLineRead,
        )
        # The service logs the report itself first: "run reported by <operator>: in_progress".
        read_back = [(line.level, line.message) for line in logs.items]
        check(
            read_back[1:] == [(line.level, line.message) for line in lines]
            and self.operator[0] in read_back[0][1],
            "logs read back",
            read_back,
        )
        self.step("the operator posts a manual run and its log lines")

    def viewer_reads_stats_history_and_dora(self) -> None:
        viewer, repo = self.viewer_pipeline, [self.repository]
        stats = expect(read_stats.sync_detailed(client=viewer, repository=repo), 200, RunStats)
        counts = (stats.total, stats.successful, stats.failed, stats.running, stats.queued)
        check(counts == (3, 1, 1, 1, 0), "stats (total, ok, failed, running, queued)", counts)
        check(stats.success_rate == 0.5, "success rate of finished runs", stats.to_dict())
        history = expect(
            read_history.sync_detailed(client=viewer, days=7, repository=repo), 200, RunHistory
        )
        check(len(history.items) == 7, "zero-filled days", len(history.items))
        totals = (
            sum(day.total for day in history.items),
            sum(day.successful for day in history.items),
            sum(day.failed for day in history.items),
        )
        check(totals == (3, 1, 1), "history (total, ok, failed)", totals)
        dora = expect(
            read_dora.sync_detailed(client=viewer, window_days=30, repository=repo),
            200,
            DoraReport,
        )
        frequency = dora.deployment_frequency
        check(
            (frequency.deployments, frequency.days_with_deployment) == (1, 1),
            "deployment frequency",
            frequency.to_dict(),
        )
        check(dora.repositories == repo, "dora filter", dora.repositories)
        deployments = expect(
            list_deployments.sync_detailed(client=viewer, repository=self.repository),
            200,
            PageDeploymentRead,
        )
        check(len(deployments.items) == 1, "deployments", len(deployments.items))
        deployment = deployments.items[0]
        check(
            (deployment.deployment_id, deployment.sha, deployment.environment)
            == (*self.deployment, "production")
            and deployment.production
            and deployment.status.value == "success",
            "production deployment",
            deployment.to_dict(),
        )
        self.summary["stats"] = stats.to_dict()
        self.summary["dora_deployments"] = frequency.deployments
        self.step("a viewer reads stats, history and DORA")

    # -- audit --------------------------------------------------------------------------

    def _events(self, **filters: Any) -> list[AuditEventRead]:
        items: list[AuditEventRead] = []
        cursor: str | None = None
        while True:
            page = expect(
                list_audit_events.sync_detailed(
                    client=self.reviewer_admin, limit=200, cursor=cursor, **filters
                ),
                200,
                PageAuditEventRead,
            )
            items.extend(page.items)
            cursor = page.next_cursor if isinstance(page.next_cursor, str) else None
            if not cursor:
                return items

    def audit_log_has_the_story_and_verifies(self) -> None:
        operator = self.operator[0]
        admin = self.config["bootstrap_admin"][0]
        wanted = {
            "service account created": lambda e: (
                e.type_ == "auth.service_account.created"
                and e.subject == self.service_client_id
                and e.actor == admin
            ),
            "bootstrap admin enrolled TOTP": lambda e: (
                e.type_ == "auth.mfa.enabled" and e.actor == admin
            ),
            "registration requested": lambda e: (
                e.type_ == "admin.registration.requested"
                and operator in (e.subject, e.data.additional_properties.get("username"))
            ),
            "registration approved": lambda e: (
                e.type_ == "admin.registration.approved"
                and e.data.additional_properties.get("signature_sha256") == self.signature_sha256
            ),
            "operator logged in": lambda e: (
                e.type_ == "auth.login.succeeded" and e.actor == operator
            ),
        }
        since = datetime.now(UTC) - timedelta(minutes=10)
        deadline = time.monotonic() + AUDIT_TIMEOUT
        while True:
            events = self._events(since=since)
            found = {name: [e for e in events if match(e)] for name, match in wanted.items()}
            missing = [name for name, hits in found.items() if not hits]
            if not missing:
                break
            check(time.monotonic() < deadline, "audit events never arrived", missing)
            time.sleep(0.5)
        approval = found["registration approved"][0]
        check(approval.actor == admin, "approver", approval.to_dict())
        seqs = [e.seq for e in events]
        check(len(seqs) == len(set(seqs)), "an event listed twice", seqs)
        verdict = expect(
            verify_audit_chain.sync_detailed(client=self.reviewer_admin), 200, ChainVerification
        )
        check(verdict.valid and verdict.first_invalid_id is None, "chain", verdict.to_dict())
        check(verdict.checked >= len(events), "checked", verdict.checked, len(events))
        self.summary["audit_events_checked"] = verdict.checked
        self.step("the audit log holds the story and its chain verifies")


class GitHubSignature(httpx.Auth):
    """``X-Hub-Signature-256``: HMAC-SHA256 of the request body, as GitHub signs it."""

    requires_request_body = True

    def __init__(self, secret: str) -> None:
        self.secret = secret.encode()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        digest = hmac.new(self.secret, request.content, hashlib.sha256).hexdigest()
        request.headers["X-Hub-Signature-256"] = f"sha256={digest}"
        yield request


def main() -> int:
    config = json.loads(sys.argv[1])
    summary = Story(config).run()
    summary["packages"] = {
        package.__name__: str(Path(package.__file__ or "").parent)
        for package in (flightdeck_auth_client, flightdeck_pipeline_client, flightdeck_admin_client)
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
