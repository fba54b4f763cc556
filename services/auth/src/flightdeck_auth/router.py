"""The service's public router: every public route lives under /auth."""

from fastapi import APIRouter

router = APIRouter(prefix="/auth")
