"""The service's public router: every public route lives under /admin."""

from fastapi import APIRouter

router = APIRouter(prefix="/admin")
