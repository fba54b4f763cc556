"""The service's public router: every public route lives under /pipelines."""

from fastapi import APIRouter

router = APIRouter(prefix="/pipelines")
