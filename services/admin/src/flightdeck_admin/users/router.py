"""Routes of the users feature (filled in by its issue-5 work)."""

from fastapi import APIRouter

router = APIRouter(prefix="/admin", tags=["users"])
