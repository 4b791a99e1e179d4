"""BC webhook intake: a wrong clientState is refused, and after a rotation the previous one stays accepted
(a refusal would make BC delete the subscription)."""

from __future__ import annotations

import pytest

from shared.services import webhook_intake
from tests.fake_services import fake_engine

COMPANY = "7c1a1f0a-2f3b-4a51-9a6e-0c0de0000001"
RECORD = "5b3c1f0a-2f3b-4a51-9a6e-0c0de0000009"


def _note(state: str) -> dict[str, object]:
    return {
        "value": [
            {
                "subscriptionId": "s",
                "clientState": state,
                "changeType": "updated",
                "resource": f"/api/v2.0/companies({COMPANY})/customers({RECORD})",
                "lastModifiedDateTime": "2026-12-02T10:00:00.123Z",
            }
        ]
    }


async def test_the_previous_client_state_is_accepted_after_a_rotation() -> None:
    engine = fake_engine(BC_WEBHOOK_CLIENT_STATE="new-secret", BC_WEBHOOK_CLIENT_STATE_PREVIOUS="old-secret")
    assert await webhook_intake.bc_notification(engine, _note("new-secret")) == 1
    assert await webhook_intake.bc_notification(engine, _note("old-secret")) == 1
    with pytest.raises(webhook_intake.WebhookUnauthorizedError):
        await webhook_intake.bc_notification(engine, _note("forged"))


async def test_without_a_previous_state_only_the_current_one_is_accepted() -> None:
    engine = fake_engine(BC_WEBHOOK_CLIENT_STATE="new-secret")
    with pytest.raises(webhook_intake.WebhookUnauthorizedError):
        await webhook_intake.bc_notification(engine, _note("old-secret"))
