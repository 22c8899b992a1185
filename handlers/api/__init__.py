"""The single-patient HTTP API (DESIGN.md section 6): ``create_app(settings)`` builds the FastAPI app."""

from handlers.api.app import create_app

__all__ = ["create_app"]
