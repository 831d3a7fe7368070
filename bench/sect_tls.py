"""bench/run.py's tls section: nginx serving TLS 1.3 full handshakes with the same key as a PEM
file, in a ctok soft token and in SoftHSM, and the nginx worker's CPU time per handshake
(run.py's docstring says what it measures)."""

import os
import shutil
import signal
import socket
import statistics
import subprocess
import time

from benchlib import (CLK_TCK, HSM_TOKEN_NAME, KEYS, TLS_CPU_TARGET, TLS_HSM_CPU_TARGET,
                      RunFailed, ctok_cnf, fmt_cmd, hsm_fixtures, make_fixtures, progress, rule,
                      run, verdict, write_private)


# ---- TLS through nginx -----------------------------------------------------------------------

NGINX_BIN = "/usr/sbin/nginx"
NGINX_READY = "start worker processes"  # logged (notice) once the master has bound its socket
# the nginx configuration, the same for every side but for the certificate and key files;
# workers run as root so that they may read the SoftHSM token directory in the temp dir
NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
user root root;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log notice;
env OPENSSL_CONF;
env SOFTHSM2_CONF;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.3;
        ssl_session_tickets off;
        ssl_session_cache off;
        location / {{ return 200 "ok"; }}
    }}
}}
"""
TLS_SIDES = ["file", "soft", "hsm"]
TLS_SIDE_DESC = {"soft": "soft pkcs12 vs PEM file", "hsm": "softhsm vs PEM file"}
TLS_TARGETS = {"soft": TLS_CPU_TARGET, "hsm": TLS_HSM_CPU_TARGET}


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_s(pid):
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Nginx:
    """nginx in the foreground with a prefix of its own in the temp dir, one worker."""

    def __init__(self, nginx, prefix, cert, key, env, env_extra):
        self.nginx, self.prefix, self.cert, self.key = nginx, prefix, cert, key
        self.env, self.env_extra = env, env_extra
        self.conf = os.path.join(prefix, "nginx.conf")
        self.error_log = os.path.join(prefix, "error.log")
        self.proc = None
        self.port = None
        self.worker = None
        os.makedirs(prefix, exist_ok=True)

    def argv(self):
        return [self.nginx, "-p", self.prefix, "-c", self.conf, "-e", self.error_log]

    def log(self):
        text = ""
        for p in (self.error_log, os.path.join(self.prefix, "stdout.log")):
            if os.path.exists(p):
                with open(p, errors="replace") as f:
                    text += f.read()
        return text

    def failure(self, what):
        return RunFailed(f"{what}:\n  {fmt_cmd(self.argv(), self.env_extra)}\n"
                         "--- nginx error log and output ---\n" + self.log()[-4000:].rstrip())

    def start(self):
        for attempt in range(3):
            self.port = free_port()
            with open(self.conf, "w") as f:
                f.write(NGINX_CONF.format(prefix=self.prefix, port=self.port, cert=self.cert,
                                          key=self.key))
            if os.path.exists(self.error_log):
                os.unlink(self.error_log)
            with open(os.path.join(self.prefix, "stdout.log"), "wb") as out:
                self.proc = subprocess.Popen(self.argv(), env=self.env, stdin=subprocess.DEVNULL,
                                             stdout=out, stderr=subprocess.STDOUT,
                                             start_new_session=True)
            deadline = time.monotonic() + 20
            while self.proc.poll() is None and time.monotonic() < deadline:
                if NGINX_READY in self.log():
                    self.worker = self.worker_pid(deadline)
                    if self.worker is not None:
                        return self
                time.sleep(0.05)
            self.stop()
            if "Address already in use" not in self.log():
                break
        raise self.failure(f"nginx did not start (exit {self.proc.returncode})")

    def worker_pid(self, deadline):
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                kids = []
            if kids:
                return kids[0]
            time.sleep(0.05)
        return None

    def check_worker(self):
        """The worker is the one measured: it must not have died and been replaced."""
        if self.proc.poll() is not None or self.worker_pid(time.monotonic() + 1) != self.worker:
            raise self.failure(f"nginx worker {self.worker} died during the run")

    def maps(self):
        try:
            with open(f"/proc/{self.worker}/maps") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever is left of its process group (the worker): ours, started above
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


def tls_client(client, port, threads, seconds=None, count=None, cafile=None):
    cmd = [client, "--host", "127.0.0.1", "--port", str(port), "--threads", str(threads)]
    if seconds is not None:
        cmd += ["--seconds", str(seconds)]
    if count is not None:
        cmd += ["--count", str(count)]
    if cafile is not None:
        cmd += ["--cafile", cafile]
    return cmd


def parse_tls(cmd, out):
    fields = dict(tok.split("=", 1) for tok in out.split() if "=" in tok)
    if "handshakes_per_sec" not in fields or "handshakes" not in fields:
        raise RunFailed(f"no handshakes_per_sec in output of:\n  {fmt_cmd(cmd)}\n{out}")
    return float(fields["handshakes_per_sec"]), int(fields["handshakes"])


def tls_fixtures(args, tmp, env, build, errors):
    """Keys and nginx sides per key name: {name: {side: (cert, key file, env, env_extra)}}.
    A ctok side whose fixtures fail is left out and its error recorded in errors."""
    openssl = args.openssl
    tool = os.path.join(build, "ctok")
    base = {k: v for k, v in env.items()
            if not k.startswith(("OPENSSL_", "CTOK_")) and k != "SOFTHSM2_CONF"}
    fixtures, config = make_fixtures(tmp, openssl, base)  # the PEM keys and their soft tokens
    sides = {name: {"file": (fx["cert"], fx["key"], base, {})} for name, fx in fixtures.items()}
    if args.file_only:
        return sides

    # (a) soft: the same PEM key in a PKCS#12 soft token
    try:
        cnf = ctok_cnf(build, config, os.path.join(tmp, "ctok-soft.cnf"))
        senv = dict(base, OPENSSL_CONF=cnf)
        for name, fx in fixtures.items():
            ref = os.path.join(tmp, f"soft-{name}.ref.pem")
            write_private(ref, run([tool, "--config", config, "ref", KEYS[name]["token"],
                                    KEYS[name]["alias"]], base))
            sides[name]["soft"] = (fx["cert"], ref, senv, {"OPENSSL_CONF": cnf})
    except RunFailed as e:
        errors.append(f"soft token fixtures: {e}")

    # (c) hsm: the same PEM keys imported into a SoftHSM token
    try:
        henv, henv_extra, _ = hsm_fixtures(args, tmp, base, build, fixtures)
        hconfig = henv["CTOK_CONFIG"]
        cnf = ctok_cnf(build, hconfig, os.path.join(tmp, "ctok-hsm.cnf"))
        nenv = dict(base, OPENSSL_CONF=cnf, SOFTHSM2_CONF=henv["SOFTHSM2_CONF"])
        for name, fx in fixtures.items():
            ref = os.path.join(tmp, f"hsm-{name}.ref.pem")
            write_private(ref, run([tool, "--config", hconfig, "ref", HSM_TOKEN_NAME, name],
                                   henv, henv_extra))
            sides[name]["hsm"] = (fx["cert"], ref, nenv,
                                  {"OPENSSL_CONF": cnf, "SOFTHSM2_CONF": henv["SOFTHSM2_CONF"]})
    except RunFailed as e:
        errors.append(f"SoftHSM fixtures: {e}")
    return sides


def tls_section(args, tmp, env, build, client, results):
    tmp = os.path.join(tmp, "tls")
    os.mkdir(tmp, 0o700)
    errors = results["tls_errors"]
    nginx = args.nginx or shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin")
    if nginx is None or not os.access(nginx, os.X_OK):
        raise RunFailed("nginx not found (Debian: apt-get install nginx)")
    key_sides = tls_fixtures(args, tmp, env, build, errors)
    seconds, threads = args.tls_seconds, args.tls_threads

    for name, sides in key_sides.items():
        servers = {}
        try:
            for side in TLS_SIDES:
                if side not in sides:
                    continue
                cert, key, nenv, extra = sides[side]
                srv = Nginx(nginx, os.path.join(tmp, f"nginx-{name}-{side}"), cert, key, nenv,
                            extra)
                try:
                    srv.start()
                    # sanity and warm-up, not measured: the chain verifies against the
                    # certificate and the server signs with the certificate's key
                    cmd = tls_client(client, srv.port, 1, count=20, cafile=cert)
                    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       stdin=subprocess.DEVNULL)
                    if p.returncode != 0:
                        raise srv.failure(f"handshakes with nginx ({side} key) failed: "
                                          f"{fmt_cmd(cmd)}\n{p.stderr.decode(errors='replace')}")
                    if side != "file" and "ctok.so" not in srv.maps():
                        raise srv.failure(f"the nginx worker ({side} key) has no ctok.so mapped")
                    servers[side] = srv
                except RunFailed as e:
                    srv.stop()
                    if side == "file":
                        raise
                    errors.append(f"{KEYS[name]['desc']} {side}: {e}")

            runs = {s: [] for s in servers}
            cpu = {s: [] for s in servers}
            for r in range(args.tls_rounds):
                for side, srv in servers.items():
                    cmd = tls_client(client, srv.port, threads, seconds=seconds)
                    c0 = proc_cpu_s(srv.worker)
                    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       stdin=subprocess.DEVNULL)
                    c1 = proc_cpu_s(srv.worker)
                    srv.check_worker()
                    if p.returncode != 0:
                        raise srv.failure(f"command failed (exit {p.returncode}):\n  "
                                          f"{fmt_cmd(cmd)}\n"
                                          + p.stderr.decode(errors="replace").rstrip())
                    hs_s, n = parse_tls(cmd, p.stdout.decode(errors="replace"))
                    us = 1e6 * (c1 - c0) / n
                    runs[side].append(hs_s)
                    cpu[side].append(us)
                    if args.verbose:
                        print(f"  tls {KEYS[name]['desc']:8} round {r + 1} {side:4} "
                              f"{hs_s:9.1f} hs/s {us:8.1f} server cpu-us/hs", flush=True)
                line = "  ".join(f"{s} {runs[s][-1]:.0f} hs/s {cpu[s][-1]:.0f} cpu-us/hs"
                                 for s in servers)
                progress("tls", f"{KEYS[name]['desc']} round {r + 1}/{args.tls_rounds}  {line}")
        finally:
            for srv in servers.values():
                srv.stop()

        file_hs = statistics.median(runs["file"])
        file_cpu = statistics.median(cpu["file"])
        if len(servers) == 1:
            results["tls"].append({"key": KEYS[name]["desc"], "side": "file",
                                   "runs": runs, "cpu_us_per_hs": cpu,
                                   "file_hs_per_sec": file_hs, "file_cpu_us": file_cpu})
        for side in servers:
            if side == "file":
                continue
            row = {"key": KEYS[name]["desc"], "side": side,
                   "compared_with": "the same key as a PEM file",
                   "target": TLS_TARGETS[side],
                   "runs": {"file": runs["file"], "ctok": runs[side]},
                   "cpu_us_per_hs": {"file": cpu["file"], "ctok": cpu[side]},
                   "file_hs_per_sec": file_hs, "ctok_hs_per_sec": statistics.median(runs[side]),
                   "file_cpu_us": file_cpu, "ctok_cpu_us": statistics.median(cpu[side])}
            row["hs_ratio"] = row["ctok_hs_per_sec"] / file_hs
            row["cpu_ratio"] = row["ctok_cpu_us"] / file_cpu
            pairs = [c / f for f, c in zip(cpu["file"], cpu[side])]
            row["cpu_pair_ratio_min"], row["cpu_pair_ratio_max"] = min(pairs), max(pairs)
            row["cpu_pair_ratio_median"] = statistics.median(pairs)
            results["tls"].append(row)


def tls_report(args, results):
    print(f"\nnginx TLS 1.3 full handshakes: one worker process (run as root), no session "
          f"tickets/cache;\nctok-bench-tls, {args.tls_threads} client threads, a new connection "
          f"and one GET per handshake;\nmedians of {args.tls_rounds} interleaved rounds x "
          f"{args.tls_seconds:g} s (file, soft, hsm, file, ...);\nhs/s = client handshakes per "
          f"second; cpu us = nginx worker utime+stime per handshake;\nratios = ctok/file; target "
          f"on the cpu ratio; pairs = range of per-round cpu ratios (noise);\nfile = nginx "
          f"without ctok, key in a PEM file; ctok = nginx with ctok.cnf and a `ctok ref` "
          f"key file;\nsoft and hsm hold the very same key as the PEM file.\n")
    hdr = f"{'path':24} {'key':8} {'file hs/s':>9} {'ctok hs/s':>9} {'hs':>5} " \
          f"{'file cpu us':>11} {'ctok cpu us':>11} {'cpu':>6} {'target':15} {'pairs':>11}"
    rule(hdr)
    for r in results["tls"]:
        if r["side"] == "file":
            print(f"{'PEM file only':24} {r['key']:8} {r['file_hs_per_sec']:9.1f} {'':9} "
                  f"{'':5} {r['file_cpu_us']:11.1f}")
            continue
        tgt = verdict(r["cpu_ratio"], r["target"], False) if r["target"] else "n/a"
        print(f"{TLS_SIDE_DESC[r['side']]:24} {r['key']:8} {r['file_hs_per_sec']:9.1f} "
              f"{r['ctok_hs_per_sec']:9.1f} {r['hs_ratio']:5.2f} {r['file_cpu_us']:11.1f} "
              f"{r['ctok_cpu_us']:11.1f} {r['cpu_ratio']:6.3f} {tgt:15} "
              f"{r['cpu_pair_ratio_min']:5.2f}-{r['cpu_pair_ratio_max']:<5.2f}")
