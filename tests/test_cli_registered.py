"""`ctok slots` without --library: the PKCS#11 libraries registered with p11-kit (EJBCA's
"PKCS#11 library configured as available"), each with its slots."""
import json
import os
import subprocess

import pytest

REGISTERED = "/usr/share/p11-kit/modules/softhsm2.module"


@pytest.fixture
def softhsm_dir(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n"
                    % tokens)
    env = dict(os.environ, SOFTHSM2_CONF=str(conf))
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "registered-one",
                    "--pin", "1234", "--so-pin", "5678"], env=env, check=True,
                   capture_output=True, timeout=60)
    return env


def test_slots_without_a_library_lists_the_registered_libraries_and_their_slots(build,
                                                                                 softhsm_dir):
    if not os.path.exists(REGISTERED):
        pytest.skip("softhsm2 is not registered with p11-kit on this machine")
    ctok = str(build / "ctok")
    p = subprocess.run([ctok, "slots", "--json"], env=softhsm_dir, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    libs = {m["name"]: m for m in json.loads(p.stdout)}
    assert "softhsm2" in libs, libs.keys()
    assert libs["softhsm2"]["path"].endswith("libsofthsm2.so")
    labels = [s["token_label"] for s in libs["softhsm2"]["slots"]]
    assert "registered-one" in labels
    human = subprocess.run([ctok, "slots"], env=softhsm_dir, capture_output=True, text=True,
                           timeout=60)
    assert human.returncode == 0, human.stderr
    assert "softhsm2 (" in human.stdout and "registered-one" in human.stdout
