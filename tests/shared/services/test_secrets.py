from shared.config import Settings
from shared.services.health import missing_secrets
from shared.services.webhook_intake import check_secret


def test_secrets_have_no_deployed_default() -> None:
    s = Settings()
    assert s.bc_webhook_client_state is None and s.dataverse_webhook_key is None and s.client_secret is None
    assert missing_secrets(s) == {"businessCentral": "BC_WEBHOOK_CLIENT_STATE", "dataverse": "DATAVERSE_WEBHOOK_KEY"}
    set_ = Settings(BC_WEBHOOK_CLIENT_STATE="a-state", DATAVERSE_WEBHOOK_KEY="a-key")
    assert missing_secrets(set_) == {}


def test_an_unset_secret_accepts_nothing() -> None:
    assert not check_secret("local-dv-webhook-key", None)
    assert not check_secret("", "")
    assert not check_secret(123, "x")
    assert check_secret("x", "x") and not check_secret("y", "x")
