// The official Azure SDKs driving tests/akv_emulator.py (tests/test_akv_emulator.py).
//
//   node drive.mjs CONFIG.json
// CONFIG (a file: it holds the client secret, which never goes in argv):
//   {vault_url, authority, tenant_id,
//    credential: {type: "secret", client_id, secret} | {type: "certificate", client_id,
//                 pem_file (certificate + private key)} | {type: "managed_identity", client_id},
//    steps: [{op, ...}]}
// Each step runs in order; the answer (stdout, one JSON document) is a list with one entry per
// step: {ok: true, ...results} or {ok: false, name, message, statusCode, code}. The emulator's
// CA comes from NODE_EXTRA_CA_CERTS; managed identity from AZURE_POD_IDENTITY_AUTHORITY_HOST.
import { readFileSync } from "node:fs";
import {
  ClientCertificateCredential,
  ClientSecretCredential,
  ManagedIdentityCredential,
} from "@azure/identity";
import { CryptographyClient, KeyClient } from "@azure/keyvault-keys";
import { CertificateClient } from "@azure/keyvault-certificates";

const conf = JSON.parse(readFileSync(process.argv[2], "utf8"));
const c = conf.credential;
const idOptions = { authorityHost: conf.authority, disableInstanceDiscovery: true };
let credential;
if (c.type === "secret") {
  credential = new ClientSecretCredential(conf.tenant_id, c.client_id, c.secret, idOptions);
} else if (c.type === "certificate") {
  credential = new ClientCertificateCredential(
    conf.tenant_id, c.client_id, { certificatePath: c.pem_file }, idOptions);
} else if (c.type === "managed_identity") {
  credential = new ManagedIdentityCredential({ clientId: c.client_id });
} else {
  throw new Error("unknown credential type " + c.type);
}
const kvOptions = { disableChallengeResourceVerification: true };
const keys = new KeyClient(conf.vault_url, credential, kvOptions);
const certs = new CertificateClient(conf.vault_url, credential, kvOptions);
const b64 = (u8) => Buffer.from(u8).toString("base64");
const unb64 = (s) => new Uint8Array(Buffer.from(s, "base64"));
const jwkOut = (k) => {
  const out = { kid: k.kid, kty: k.kty, key_ops: k.keyOps };
  for (const f of ["n", "e", "x", "y"]) if (k[f]) out[f] = b64(k[f]);
  if (k.crv) out.crv = k.crv;
  return out;
};
const crypto = (kid) => new CryptographyClient(kid, credential, kvOptions);

const ops = {
  async createKey(s) {
    const opts = {};
    if (s.size) opts.keySize = s.size;
    if (s.crv) opts.curve = s.crv;
    if (s.ops) opts.keyOps = s.ops;
    const k = await keys.createKey(s.name, s.kty, opts);
    return { kid: k.id, version: k.properties.version, jwk: jwkOut(k.key) };
  },
  async getKey(s) {
    const k = await keys.getKey(s.name, s.version ? { version: s.version } : {});
    return { kid: k.id, enabled: k.properties.enabled, jwk: jwkOut(k.key) };
  },
  async listKeys(s) {
    const names = [];
    let pages = 0;
    for await (const page of keys.listPropertiesOfKeys().byPage({ maxPageSize: s.page_size })) {
      pages++;
      for (const p of page) names.push(p.name);
    }
    return { names, pages };
  },
  async sign(s) {
    const cc = crypto(s.kid);
    const r = await cc.sign(s.alg, unb64(s.digest));
    const v = await cc.verify(s.alg, unb64(s.digest), r.result);
    return { kid: r.keyID, signature: b64(r.result), verified: v.result };
  },
  async decrypt(s) {
    const r = await crypto(s.kid).decrypt({ algorithm: s.alg, ciphertext: unb64(s.ciphertext) });
    return { kid: r.keyID, plaintext: b64(r.result) };
  },
  async getCertificate(s) {
    const cert = await certs.getCertificate(s.name);
    return { id: cert.id, kid: cert.keyId, cer: b64(cert.cer), x5t: b64(cert.properties.x509Thumbprint) };
  },
  async listCertificates() {
    const names = [];
    for await (const p of certs.listPropertiesOfCertificates()) names.push(p.name);
    return { names };
  },
  async deleteKey(s) {
    const poller = await keys.beginDeleteKey(s.name, { intervalInMs: 50 });
    const d = await poller.pollUntilDone();
    return {
      recoveryId: d.properties.recoveryId ?? d.recoveryId,
      deletedOn: d.properties.deletedOn?.toISOString(),
      scheduledPurgeDate: d.properties.scheduledPurgeDate?.toISOString(),
    };
  },
};

const results = [];
for (const s of conf.steps) {
  try {
    results.push({ ok: true, ...(await ops[s.op](s)) });
  } catch (e) {
    results.push({
      ok: false, name: e.name, message: String(e.message).slice(0, 2000),
      statusCode: e.statusCode ?? null, code: e.code ?? null,
    });
  }
}
process.stdout.write(JSON.stringify(results) + "\n");
