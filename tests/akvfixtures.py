"""Azure Key Vault fixtures of the ctok acceptance suite: one Key Vault + Azure AD emulator per
test module (akv_emu) and azurekv tokens written into a Workspace's config the way a user writes
them (azurekv_token).

Every secret the emulator learns or hands out (client secrets, access tokens) is registered
with the harness's secret scan (ctoktest.register_secret)."""

import secrets

import pytest

from akv_emulator import AkvEmulator
from ctoktest import Workspace, register_secret
from kmsfixtures import add_token_entry


@pytest.fixture(scope="module")
def akv_emu(tmp_path_factory):
    """One Key Vault, Azure AD and managed-identity emulator for the module; stopped when the
    module ends."""
    with AkvEmulator(tmp_path_factory.mktemp("akv-emulator"), on_secret=register_secret) as emu:
        yield emu


def akv_client(emu, forbidden=(), cert_pem=None, secret=True):
    """A new app registration in emu: (client_id, secret or None)."""
    client_id = "ctok-" + secrets.token_hex(8)
    code = register_secret("ctok~" + secrets.token_urlsafe(30)) if secret else None
    emu.add_client(client_id, secret=code, cert_pem=cert_pem, forbidden=forbidden)
    return client_id, code


def azurekv_token(ws: Workspace, emu, name="akv", auth_method="secret", binding=None,
                  forbidden=(), cert_pem=None, **extra):
    """Registers a client in emu and writes an azurekv token entry named name; returns the name.

    secret: a new client with a client secret in a 0600 auth file. certificate: a new client
    whose registered certificate is cert_pem (the certificate of the key that binding, a ctok:
    URI, names). managed_identity: emu's managed identity (a new client id), mi_endpoint =
    emu.mi_url. forbidden: operations the client's access policy lacks. extra: more entry fields
    (vault_type, timeout_ms, max_retries, ...); None removes one."""
    entry = {"name": name, "type": "azurekv", "vault_url": emu.vault_url,
             "tenant_id": emu.tenant_id, "auth_method": auth_method,
             "login_url": emu.authority, "ca_file": emu.ca_file}
    if auth_method == "secret":
        cid, code = akv_client(emu, forbidden)
        entry["client_id"] = cid
        entry["auth"] = {"file": str(ws.write("%s.azure-secret" % name, code, mode=0o600))}
    elif auth_method == "certificate":
        if binding is None or cert_pem is None:
            raise ValueError("certificate auth wants binding and cert_pem")
        cid, _ = akv_client(emu, forbidden, cert_pem=cert_pem, secret=False)
        entry["client_id"] = cid
        entry["binding"] = binding
    elif auth_method == "managed_identity":
        cid = "ctok-mi-" + secrets.token_hex(6)
        emu.add_client(cid, forbidden=forbidden)
        emu.enable_managed_identity(cid)
        entry["client_id"] = cid
        entry["mi_endpoint"] = emu.mi_url
    add_token_entry(ws, entry, extra)
    return name
