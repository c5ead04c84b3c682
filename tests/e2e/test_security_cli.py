"""Security end to end: ``caxton keys`` / ``caxton token`` and the seed's ``security:`` block
(TLS with a certificate made here, API keys, JWT, CORS, rate limits) on a real process."""

from __future__ import annotations

import datetime
import ipaddress
import json
import secrets
import signal
import ssl
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from processes import caxton_env, run_cli, run_cli_async, start_server, wait_exit, write_config

from caxton.security.keys import hash_key
from caxton.security.roles import Role
from caxton.security.tokens import verify_token

if TYPE_CHECKING:
    import trio

pytestmark = pytest.mark.slow

SEED_SECURITY = Path(__file__).parents[1] / "unit" / "seed_configs" / "security.yaml"
DASHBOARD = "https://dashboard.example.com"


def make_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for localhost/127.0.0.1: (ca, cert, key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Caxton test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "caxton.crt", folder / "caxton.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


def seed_config(tmp_path: Path, etc: Path) -> Path:
    """The seed's security block verbatim, its /etc paths moved under ``etc``."""
    block = SEED_SECURITY.read_text()
    for original, moved in (
        ("/etc/ssl/certs/caxton.crt", etc / "caxton.crt"),
        ("/etc/ssl/private/caxton.key", etc / "caxton.key"),
        ("/etc/caxton/jwt-secret", etc / "jwt-secret"),
        ("/etc/caxton/api-keys.yaml", etc / "api-keys.yaml"),
    ):
        assert original in block
        block = block.replace(original, str(moved))
    return write_config(tmp_path / "caxton.yaml", tmp_path / "data", block)


def test_keys_create_list_and_revoke(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "caxton.yaml",
        tmp_path / "data",
        "security:\n  api_keys:\n    key_file: keys/api-keys.yaml\n",
    )
    created = run_cli(
        "keys", "create", "--name", "ops", "--role", "operator", "--config", str(config)
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("cxk_")
    assert "only time it is shown" in created.stderr
    key_file = tmp_path / "data" / "keys" / "api-keys.yaml"  # relative to data_dir
    text = key_file.read_text()
    assert key not in text
    assert hash_key(key) in text
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    again = run_cli("keys", "create", "--name", "ops", "--role", "user", "--config", str(config))
    assert again.returncode == 1
    assert "already has a key named 'ops'" in again.stderr
    env = caxton_env(CAXTON_CONFIG_PATH=str(config))
    second = run_cli("keys", "create", "--name", "ro", "--role", "readonly", "-o", "json", env=env)
    assert second.returncode == 0, second.stderr
    made = json.loads(second.stdout)
    assert (made["name"], made["role"], made["key_file"]) == ("ro", "readonly", str(key_file))
    assert run_cli("keys", "create", "--name", "x", "--role", "boss", env=env).returncode == 2

    revoked = run_cli("keys", "revoke", "ops", env=env)
    assert revoked.returncode == 0, revoked.stderr
    listed = json.loads(run_cli("keys", "list", "-o", "json", env=env).stdout)
    assert [(k["name"], k["role"], k["revoked"]) for k in listed["keys"]] == [
        ("ops", "operator", True),
        ("ro", "readonly", False),
    ]
    table = run_cli("keys", "list", env=env).stdout
    assert "revoked" in table
    assert "active" in table
    assert key not in table
    missing = run_cli("keys", "list")
    assert missing.returncode == 1
    assert "--config" in missing.stderr


def test_token_issue_signs_with_the_configured_secret(tmp_path: Path) -> None:
    secret = secrets.token_hex(32)
    (tmp_path / "jwt-secret").write_text(secret + "\n")
    config = write_config(
        tmp_path / "caxton.yaml",
        tmp_path / "data",
        f"security:\n  authentication:\n    jwt_secret_file: {tmp_path / 'jwt-secret'}\n"
        "    token_expiry: 2h\n",
    )
    issued = run_cli(
        "token", "issue", "--subject", "dash", "--role", "user", "--config", str(config)
    )
    assert issued.returncode == 0, issued.stderr
    claims = verify_token(issued.stdout.strip(), secret.encode(), now=time.time())
    assert (claims.sub, claims.role, claims.exp - claims.iat) == ("dash", Role.USER, 7200)
    short = run_cli(
        "token",
        "issue",
        "--sub",
        "ci",
        "--role",
        "admin",
        "--expiry",
        "5m",
        "-o",
        "json",
        "--secret-file",
        str(tmp_path / "jwt-secret"),
    )
    data = json.loads(short.stdout)
    assert verify_token(data["token"], secret.encode(), now=time.time()).role is Role.ADMIN
    assert data["expires_at"] - int(time.time()) <= 300
    bad = run_cli(
        "token",
        "issue",
        "--sub",
        "x",
        "--role",
        "user",
        "--expiry",
        "soon",
        "--config",
        str(config),
    )
    assert bad.returncode == 2


async def test_seed_security_block_serves_https_with_keys_and_tokens(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    ca, _, _ = make_certificate(etc)
    (etc / "jwt-secret").write_text(secrets.token_hex(32) + "\n")  # as `openssl rand -hex 32`
    (etc / "jwt-secret").chmod(0o600)
    config = seed_config(tmp_path, etc)
    created = await run_cli_async(
        "keys", "create", "--name", "admin", "--role", "admin", "--config", str(config)
    )
    assert created.returncode == 0, created.stderr
    admin_key = created.stdout.decode().strip()
    reader = await run_cli_async(
        "keys", "create", "--name", "grafana", "--role", "readonly", "--config", str(config)
    )
    readonly_key = reader.stdout.decode().strip()
    checked = await run_cli_async("validate", "--config", str(config))
    assert checked.returncode == 0
    assert b"refuse" not in checked.stdout + checked.stderr

    server = await start_server(nursery, "--config", str(config))
    url = server.api_url
    assert url.startswith("https://127.0.0.1:")
    env = caxton_env()

    async def cli(*args: str, key: str | None = None, cacert: bool = True) -> tuple[int, str]:
        extra = {"CAXTON_API_KEY": key} if key else {}
        tls = ["--cacert", str(ca)] if cacert else []
        result = await run_cli_async("--url", url, *tls, *args, env={**env, **extra})
        return result.returncode, (result.stdout + result.stderr).decode()

    assert (await cli("health"))[0] == 0  # /ready needs no credentials
    code, text = await cli("agents", "list")
    assert code == 1
    assert "needs credentials" in text
    assert (await cli("agents", "list", key=admin_key))[0] == 0
    code, text = await cli("agents", "list", key=admin_key, cacert=False)
    assert code == 1
    assert "not trusted" in text
    assert "--cacert" in text
    echo = Path(__file__).parents[2] / "agents" / "echo.toml"
    assert (await cli("agents", "deploy", str(echo), key=admin_key))[0] == 0
    code, text = await cli("chat", "echo", "hello over tls", key=admin_key)
    assert code == 0, text  # the WebSocket verifies with --cacert too
    assert "hello over tls" in text

    issued = await run_cli_async(
        "token", "issue", "--subject", "dash", "--role", "user", "--config", str(config)
    )
    token = issued.stdout.decode().strip()
    context = ssl.create_default_context(cafile=str(ca))
    async with httpx.AsyncClient(base_url=url, verify=context) as client:
        bearer = {"Authorization": f"Bearer {token}"}
        assert (await client.get("/api/v1/agents", headers=bearer)).status_code == 200
        readonly = {"X-API-Key": readonly_key}
        entity = {"name": "n", "entity_type": "t", "observations": ["o"]}
        refused = await client.post("/api/v1/memory/entities", json=entity, headers=readonly)
        assert refused.status_code == 403
        made = await client.post("/api/v1/memory/entities", json=entity, headers=bearer)
        assert made.status_code == 201
        assert int(made.headers["X-RateLimit-Limit"]) == 1000
        preflight = await client.options(
            "/api/v1/agents",
            headers={"Origin": DASHBOARD, "Access-Control-Request-Method": "DELETE"},
        )
        assert preflight.status_code == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == DASHBOARD
        report = (await client.get("/api/v1/health")).json()
        assert report["security"]["authentication"] is True
        assert report["security"]["tls"] is True
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=url) as client:
            await client.get("/health")  # the system's CAs do not know this certificate
    assert server.metrics_url is not None
    async with httpx.AsyncClient() as client:
        assert (await client.get(server.metrics_url)).status_code == 200
    audit = [
        json.loads(line) for line in (tmp_path / "data" / "audit.log").read_text().splitlines()
    ]
    assert [(a["identity"], a["outcome"]) for a in audit] == [
        ("admin", "ok"),  # the deploy
        ("grafana", "denied"),
        ("dash", "ok"),
    ]
    server.process.send_signal(signal.SIGTERM)
    assert await wait_exit(server.process) == 0


async def test_malformed_key_file_refuses_start_naming_the_line(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    make_certificate(etc)
    (etc / "jwt-secret").write_text(secrets.token_hex(32))
    (etc / "api-keys.yaml").write_text(
        "keys:\n  - name: a\n    role: admin\n    hash: sha256:abc\n"
    )
    (etc / "api-keys.yaml").chmod(0o644)
    config = seed_config(tmp_path, etc)
    result = await run_cli_async("start", "--config", str(config))
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert f"API key file {etc / 'api-keys.yaml'}, line 2" in stderr
    assert "hash must be 'sha256:'" in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "data" / "state.json").exists()
    checked = await run_cli_async("validate", "--config", str(config))
    assert checked.returncode == 0  # the config itself is valid; validate warns
    warning = f"caxton start will refuse this file: API key file {etc / 'api-keys.yaml'}, line 2"
    assert warning in checked.stdout.decode()
