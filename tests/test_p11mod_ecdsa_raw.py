"""ECDSA through ctok-p11.so comes as PKCS#11's r || s (issue 14), asked of the token layer in
that form (ctok_key_sign_raw): each half as long as the group order, for P-256, P-384 and
P-521, on a soft token (whose backend signs DER) and a SoftHSM token (whose backend gives
r || s), and the signature verifies with the key's public key outside ctok."""

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from p11modtest import make_face

CURVES = {"p256": ("ec:P-256", 32, "ECDSA_SHA256", hashes.SHA256()),
          "p384": ("ec:P-384", 48, "ECDSA_SHA384", hashes.SHA384()),
          "p521": ("ec:P-521", 66, "ECDSA_SHA512", hashes.SHA512())}

@pytest.fixture(params=["soft", "hsm"])
def face(request, tmp_path_factory, build):
    """A token of each kind holding a key of each curve (its own: the shared faces hold the
    keys other tests count)."""
    return make_face(request.param, tmp_path_factory, build,
                     {alias: spec[0] for alias, spec in CURVES.items()}, "-ecraw")


@pytest.mark.parametrize("alias", sorted(CURVES))
def test_ecdsa_signatures_leave_the_module_as_r_s_of_the_order_length(face, tmp_path, alias):
    _, half, mech, md = CURVES[alias]
    sig = tmp_path / "sig"
    r = face.client("sign", alias, mech, sig)
    assert r["sign"] == "OK" and r["siglen"] == 2 * half, r
    assert r["small"] == ["BUFFER_TOO_SMALL", 2 * half], r
    raw = sig.read_bytes()
    assert len(raw) == 2 * half
    pub = serialization.load_pem_public_key(face.pubkey(alias).read_bytes())
    der = encode_dss_signature(int.from_bytes(raw[:half], "big"),
                               int.from_bytes(raw[half:], "big"))
    pub.verify(der, b"ctok-p11 signs this", ec.ECDSA(md))
    # and a signature of other data does not verify: the check can fail
    with pytest.raises(InvalidSignature):
        pub.verify(der, b"something else", ec.ECDSA(md))
