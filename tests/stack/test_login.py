"""Defect (d): the simple auth manager's login, against the running api-server."""

from __future__ import annotations

import urllib.error

import pytest

pytestmark = [pytest.mark.stack, pytest.mark.integration, pytest.mark.airflow]


def test_the_admin_logs_in_with_the_password_of_the_passwords_file(stack) -> None:
    token = stack.token()
    assert token.count(".") == 2  # a JWT
    assert stack.api("GET", "dags/ecoval_nightly")["dag_id"] == "ecoval_nightly"


def test_admin_admin_is_refused(stack) -> None:
    # SIMPLE_AUTH_MANAGER_USERS=admin:admin names the user admin with the role admin; the password
    # is the passwords file's, never the role.
    with pytest.raises(urllib.error.HTTPError) as refused:
        stack.token("admin", "admin")
    assert refused.value.code == 401
