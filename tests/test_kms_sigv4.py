"""SigV4 (kms/sigv4.c) against vectors of AWS's public signing test suite (awslabs/aws-c-auth,
tests/aws-signing-test-suite/v4: credentials AKIDEXAMPLE, 2015-08-30T12:36:00Z, us-east-1,
service "service"), through the tests/sigv4_vectors.c driver."""
import subprocess

import pytest

from ctoktest import BUILD

DRIVER = BUILD / "tests" / "sigv4_vectors"
AKID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
DATE = "20150830T123600Z"
HOST = "Host:example.amazonaws.com"
XDATE = "X-Amz-Date:" + DATE
SESSION = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267"

# name: (method, headers, body, signed headers, signature) as the suite's
# header-signed-request.txt has them
VECTORS = {
    "get-vanilla": ("GET", [HOST, XDATE], "", "host;x-amz-date",
                    "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
    "post-vanilla": ("POST", [HOST, XDATE], "", "host;x-amz-date",
                     "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
    "post-x-www-form-urlencoded": (
        "POST", ["Content-Type:application/x-www-form-urlencoded", HOST, XDATE], "Param1=value1",
        "content-type;host;x-amz-date",
        "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"),
    "get-vanilla-with-session-token": (
        "GET", [HOST, XDATE, "X-Amz-Security-Token:" + SESSION], "",
        "host;x-amz-date;x-amz-security-token",
        "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"),
    "post-header-key-sort": ("POST", [HOST, "My-Header1:value1", XDATE], "",
                             "host;my-header1;x-amz-date",
                             "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c"),
    "get-header-value-trim": ("GET", [HOST, "My-Header1: value1", 'My-Header2: "a   b   c"', XDATE],
                              "", "host;my-header1;my-header2;x-amz-date",
                              "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"),
}


def sign(method, headers, body, path="/", query="", region="us-east-1", service="service"):
    stdin = SECRET + "\n" + "\n".join(headers) + "\n\n" + body
    p = subprocess.run([str(DRIVER), method, path, query, region, service, DATE, AKID],
                       input=stdin, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    canonical, to_sign, auth = p.stdout.rstrip("\n").split("\n----\n")
    return canonical, to_sign, auth


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_sigv4_matches_the_aws_test_suite(name):
    method, headers, body, signed, signature = VECTORS[name]
    _, _, auth = sign(method, headers, body)
    assert auth == ("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/"
                    "aws4_request, SignedHeaders=%s, Signature=%s" % (signed, signature))


def test_sigv4_canonical_request_collapses_spaces_and_hashes_the_body():
    canonical, to_sign, _ = sign("GET", [HOST, "My-Header1: value1", 'My-Header2: "a   b   c"',
                                         XDATE], "")
    assert canonical.split("\n")[3:6] == ["host:example.amazonaws.com", "my-header1:value1",
                                          'my-header2:"a b c"']
    assert canonical.endswith(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert to_sign.split("\n")[:3] == ["AWS4-HMAC-SHA256", DATE,
                                       "20150830/us-east-1/service/aws4_request"]


def test_sigv4_kms_scope_and_port_in_host():
    """KMS requests sign the Host header with a non-default port, in the kms scope."""
    canonical, to_sign, auth = sign(
        "POST", ["Content-Type:application/x-amz-json-1.1", "Host:127.0.0.1:8443", XDATE,
                 "X-Amz-Target:TrentService.ListAliases"], "{}", region="eu-west-1",
        service="kms")
    assert "host:127.0.0.1:8443\n" in canonical
    assert "20150830/eu-west-1/kms/aws4_request" in to_sign
    assert "SignedHeaders=content-type;host;x-amz-date;x-amz-target," in auth
