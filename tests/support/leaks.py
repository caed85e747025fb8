"""Plaintext secrets the suite uses. Every test's captured stdout, stderr, log records and failure
text is scanned for them by `tests/conftest.py`; a single occurrence fails the run."""

from __future__ import annotations

PLAINTEXT_SECRETS = (
    "pl41n-Secret-do-not-leak",
    "an0ther-Secret-do-not-leak",
    "demo-password-change-me",
    "app-S3cret-value-do-not-leak",  # an application Secret's value (tests/test_app_secrets.py)
    "hde_Enrollment-token-do-not-leak",  # an enrollment token (tests/test_enrollment.py)
)

APP_SECRET = PLAINTEXT_SECRETS[3]  # an application Secret's value
ENROLLMENT_TOKEN = PLAINTEXT_SECRETS[4]  # an enrollment token
