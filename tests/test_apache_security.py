"""The secured test Kafka's configuration (pure parts): broker properties, SCRAM format args, client settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.config import KafkaSettings
from streams.errors import ConfigError
from streams.kafka.apache_security import ADMIN, MTLS, SASL_SSL, Security


def test_sasl_ssl_broker_enforces_acls_and_formats_every_users_scram_credential(tmp_path: Path) -> None:
    sec = Security(SASL_SSL, {"w": "pw"})
    assert set(sec.users) == {ADMIN, "w"}  # admin is always there, with a random password
    props = sec.node_properties(9093, 9094, tmp_path)
    assert props["listener.security.protocol.map"] == "SECURE:SASL_SSL,CONTROLLER:PLAINTEXT"
    assert props["advertised.listeners"] == "SECURE://127.0.0.1:9093"  # the only listener clients learn of
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"].split(";")[0] == "User:admin" and "User:w" not in props["super.users"]
    assert f'password="{sec.users[ADMIN]}"' in props["listener.name.secure.scram-sha-512.sasl.jaas.config"]
    assert sec.format_args() == ["--add-scram", f"SCRAM-SHA-512=[name=admin,password={sec.users[ADMIN]}]",
                                 "--add-scram", "SCRAM-SHA-512=[name=w,password=pw]"]


def test_mtls_requires_client_certificates_and_takes_the_principal_from_the_cn(tmp_path: Path) -> None:
    sec = Security.of(MTLS, "w")
    props = sec.node_properties(9093, 9094, tmp_path)
    assert props["ssl.client.auth"] == "required" and "sasl.enabled.mechanisms" not in props
    assert props["ssl.principal.mapping.rules"].startswith("RULE:^CN=")
    assert sec.format_args() == []
    env = sec.client_env(tmp_path, "w")
    settings = KafkaSettings.from_env("127.0.0.1:9093", env=env)
    assert settings.client["security.protocol"] == "SSL"
    assert str(settings.client["ssl.certificate.location"]).endswith("w.pem")


def test_client_settings_of_a_sasl_user_reach_librdkafka_through_the_usual_env_vars(tmp_path: Path) -> None:
    sec = Security(SASL_SSL, {"w": "pw"})
    conf = sec.client_config(tmp_path, "w")
    assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert (conf["sasl.username"], conf["sasl.password"]) == ("w", "pw")
    with pytest.raises(ConfigError, match="no user 'x'"):
        sec.client_env(tmp_path, "x")


@pytest.mark.parametrize(("mode", "users"), [("kerberos", {}), (SASL_SSL, {"a b": "p"}), (SASL_SSL, {"w": "p,w]"})])
def test_bad_modes_and_user_names_are_refused(mode: str, users: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Security(mode, users)
