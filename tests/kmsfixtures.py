"""AWS KMS fixtures of the ctok acceptance suite: one KMS emulator per test module (kms_emu) and
awskms tokens written into a Workspace's config the way a user writes them (awskms_token).

Every secret the emulator learns or hands out (access keys, role credentials, session tokens)
is registered with the harness's secret scan (ctoktest.register_secret)."""

import json
import secrets

import pytest

from ctoktest import Workspace, register_secret
from kms_emulator import SEED_ACTIONS, KmsEmulator

_AKID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


@pytest.fixture(scope="module")
def kms_emu(tmp_path_factory):
    """One KMS emulator (and IMDSv2) for the module; stopped when the module ends."""
    with KmsEmulator(tmp_path_factory.mktemp("kms-emulator"),
                     on_secret=register_secret) as emu:
        yield emu


def kms_credential(emu, actions=SEED_ACTIONS, session_token=False, expires_at=None):
    """A fresh access key registered in emu: (access_key_id, secret, session_token or None)."""
    prefix = "ASIA" if session_token else "AKIA"
    akid = prefix + "".join(secrets.choice(_AKID_CHARS) for _ in range(16))
    secret = register_secret(secrets.token_urlsafe(30))
    token = register_secret(secrets.token_urlsafe(64)) if session_token else None
    emu.add_credential(akid, secret, session_token=token, actions=actions, expires_at=expires_at)
    return akid, secret, token


def add_token_entry(ws: Workspace, entry, extra=None):
    """Appends a token entry, changed by extra (fields to set; None removes one), to the
    workspace's tokens.json (made 0644 if new: the loader refuses a config others can write)."""
    for k, v in (extra or {}).items():
        if v is None:
            entry.pop(k, None)
        else:
            entry[k] = v
    conf = ws.load_config() if ws.config.exists() else {"tokens": []}
    conf.setdefault("tokens", []).append(entry)
    if ws.config.exists():
        ws.save_config(conf)
    else:
        ws.write(ws.config.name, json.dumps(conf, indent=2), mode=0o644)


def awskms_token(ws: Workspace, emu, name="kms", auth_method="keys", actions=SEED_ACTIONS,
                 session_token=False, expires_at=None, role_ttl=3600, **extra):
    """Registers a credential (keys) or the instance role (role) in emu and writes an awskms
    token entry named name; returns the name.

    keys: a new access key with the given actions, its secret (and session token when
    session_token, "\\n"-separated) in a 0600 auth file. role: emu's instance role with the
    given actions and credential lifetime role_ttl, imds_endpoint = emu.imds_url.
    extra: more entry fields (timeout_ms, max_retries, certificates, ...); None removes one."""
    entry = {"name": name, "type": "awskms", "region": emu.region, "auth_method": auth_method,
             "endpoint": emu.url, "ca_file": emu.ca_file}
    if auth_method == "keys":
        akid, secret, token = kms_credential(emu, actions, session_token, expires_at)
        code = secret if token is None else secret + "\n" + token
        entry["access_key_id"] = akid
        entry["auth"] = {"file": str(ws.write("%s.aws-secret" % name, code, mode=0o600))}
    elif auth_method == "role":
        emu.set_role("ctok-%s-role" % name, actions=actions, ttl_seconds=role_ttl)
        entry["imds_endpoint"] = emu.imds_url
    else:
        entry["auth_method"] = auth_method  # a test of the loader's refusal
    add_token_entry(ws, entry, extra)
    return name

