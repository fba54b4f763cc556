"""Routes of the audit feature (filled in by its issue-5 work)."""

from fastapi import APIRouter

router = APIRouter(prefix="/admin", tags=["audit"])
internal_router = APIRouter(prefix="/admin/internal", tags=["internal"])
