# Helpers for dtrotated's integration tests: the real daemon binary, the project's fake
# Tokens API over real sockets, a NOTIFY_SOCKET to watch sd_notify, temp directories.
# Python stdlib only. Every wait has a deadline; nothing sleeps to synchronise where an
# event (a log line, a notify message, a process exit) can be waited on.
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import zlib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DAEMON = os.path.join(ROOT, "dtrotated")
FAKE = os.path.join(ROOT, "tests", "fake-api", "fake-api")
TOKEN_RE = re.compile(r"dt0c01\.[A-Z0-9]{24}\.([A-Z0-9]{64})")


class Fake:
    """The fake Tokens API, started on an ephemeral loopback port."""

    def __init__(self, workdir, *args, ssl_context=None):
        self.ssl_context = ssl_context
        self.port_file = os.path.join(workdir, "fake.port")
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", FAKE, "--port", "0", "--port-file", self.port_file, "--quiet", *args],
            stdout=subprocess.PIPE, stderr=open(os.path.join(workdir, "fake.log"), "w"))
        line = LineReader(self.proc.stdout).line(15)
        m = re.search(r"listening on (\S+)", line or "")
        if not m:
            self.stop()
            raise RuntimeError("fake API did not start: %r" % line)
        self.url = m.group(1).rstrip("/")

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10, context=self.ssl_context) as r:
            raw = r.read()
            return json.loads(raw) if raw else None

    def plant(self, name, scopes=("ReadConfig",), **kw):
        return self.call("POST", "/_fake/tokens", {"name": name, "scopes": list(scopes), **kw})

    def state(self):
        return self.call("GET", "/_fake/state")

    def faults(self, *faults):
        return self.call("POST", "/_fake/faults", {"faults": list(faults)})

    def clear_faults(self):
        """Drops the queued one-shot faults that no request has met yet."""
        return self.call("DELETE", "/_fake/faults")

    def random_faults(self, rate, seed, kinds=None):
        body = {"rate": rate, "seed": seed}
        if kinds:
            body["kinds"] = kinds
        return self.call("POST", "/_fake/random-faults", body)

    def token(self, secret):
        for t in self.state()["tokens"]:
            if t["token"] == secret:
                return t
        return None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class LineReader:
    """Lines from a pipe with a timeout. select() on the fd and a private buffer: a
    buffered readline() would hide lines already read from the fd."""

    def __init__(self, stream):
        self.fd = stream.fileno()
        self.buf = b""
        self.eof = False

    def line(self, timeout):
        """The next line; "" at end of file; None after timeout seconds."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf and not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                chunk = os.read(self.fd, 65536)
                if chunk:
                    self.buf += chunk
                else:
                    self.eof = True
        if b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            return line.decode(errors="replace") + "\n"
        line, self.buf = self.buf, b""
        return line.decode(errors="replace")

    def rest(self):
        while not self.eof:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                break
            self.buf += chunk
        out, self.buf = self.buf, b""
        return out.decode(errors="replace")


class Notify:
    """A NOTIFY_SOCKET: collects the daemon's sd_notify messages."""

    def __init__(self, workdir):
        self.path = os.path.join(workdir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []

    def wait(self, pattern, timeout=20):
        """Waits for a message matching the regex; returns the match."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        for m in self.messages:
            hit = rx.search(m)
            if hit:
                return hit
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no notify message matching %r in %s" % (pattern, self.messages[-10:]))
            r, _, _ = select.select([self.sock], [], [], left)
            if r:
                m = self.sock.recv(65536).decode()
                self.messages.append(m)
                hit = rx.search(m)
                if hit:
                    return hit

    def close(self):
        self.sock.close()


class Daemon:
    """A running dtrotated (not --once), its stderr collected line by line."""

    def __init__(self, env, args=(), notify=None, extra_env=None):
        self.log = []
        e = dict(os.environ)
        e.update(extra_env or {})
        if notify:
            e["NOTIFY_SOCKET"] = notify.path
        self.proc = subprocess.Popen([DAEMON, "--stderr", "-c", env.config, *args], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=e)
        self.reader = LineReader(self.proc.stderr)

    def wait_log(self, pattern, timeout=30):
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        for line in self.log:
            if rx.search(line):
                return line
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no log line matching %r; last lines:\n%s" % (pattern, "".join(self.log[-20:])))
            line = self.reader.line(left)
            if line is None:
                continue
            if line == "":
                raise AssertionError("daemon exited (%s) before logging %r:\n%s" % (
                    self.proc.wait(), pattern, "".join(self.log[-20:])))
            self.log.append(line)
            if rx.search(line):
                return line

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=15):
        rc = self.proc.wait(timeout)
        self.log.extend(self.reader.rest().splitlines(True))
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.extend(self.reader.rest().splitlines(True))


class Env:
    """A temp directory with a fake API, a management token, token files and a config."""

    def __init__(self, fake_args=(), api="v1", ssl_context=None):
        self.dir = tempfile.mkdtemp(prefix="dtrotated-it-")
        os.chmod(self.dir, 0o755)
        self.fake = Fake(self.dir, *fake_args, ssl_context=ssl_context)
        self.api = api
        self.state_dir = os.path.join(self.dir, "state")
        self.config = os.path.join(self.dir, "dtrotated.conf")
        self.mgmt_scopes = ["TenantTokenManagement"] if api == "v1" else ["apiTokens.read", "apiTokens.write"]
        self.mgmt = self.fake.plant("dtrotated-admin", self.mgmt_scopes)
        self.mgmt_file = self.write_token("admin.token", self.mgmt["token"])
        self.jobs = []

    def path(self, name):
        return os.path.join(self.dir, name)

    def write_token(self, name, secret):
        p = self.path(name)
        with open(p, "w") as f:
            f.write(secret + "\n")
        return p

    def read_token(self, name):
        with open(self.path(name)) as f:
            return f.read().strip()

    def add_job(self, name, created_ms=None, scopes=("ReadConfig",), token_name=None, **settings):
        """Plants a token in the fake, writes its file, adds a job for it."""
        kw = {"createdMs": created_ms} if created_ms is not None else {}
        t = self.fake.plant(token_name or name, scopes, **kw)
        f = self.write_token(name + ".token", t["token"])
        job = {"name": name, "environment": "test", "file": f, "rotate_every": "30d", "grace_period": "7d"}
        job.update(settings)
        self.jobs.append(job)
        return t

    def write_config(self, extra="", env_extra=""):
        def val(v):
            if isinstance(v, (list, tuple)):
                return "[ " + ", ".join(json.dumps(x) for x in v) + " ]"
            if isinstance(v, int):
                return str(v)
            return json.dumps(v)
        jobs = ",\n".join("  { " + " ".join("%s = %s;" % (k, val(v)) for k, v in j.items()) + " }"
                          for j in self.jobs)
        with open(self.config, "w") as f:
            f.write('state_directory = "%s";\nretry_max_delay = "1s";\n%s\n' % (self.state_dir, extra))
            f.write('environments = (\n  { name = "test"; url = "%s"; api = "%s"; '
                    'management_token_file = "%s"; request_timeout = "5s"; %s }\n);\n'
                    % (self.fake.url, self.api, self.mgmt_file, env_extra))
            f.write("tokens = (\n%s\n);\n" % jobs)

    def run_once(self, *args, timeout=120):
        p = subprocess.run([DAEMON, "--stderr", "--once", "-c", self.config, *args],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        return p.returncode, p.stderr.decode(errors="replace")

    def journal(self):
        try:
            with open(os.path.join(self.state_dir, "journal")) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def secrets_known(self):
        """The secret parts of every token the fake ever issued (all of a legacy token)."""
        out = []
        for t in self.fake.state()["tokens"]:
            m = TOKEN_RE.match(t["token"])
            out.append(m.group(1) if m else t["token"])
        return out

    def assert_no_secret_in(self, text, what):
        for s in self.secrets_known():
            assert s not in text, "a token secret appears in %s" % what

    def assert_no_secret_in_state_dir(self):
        for name in os.listdir(self.state_dir):
            p = os.path.join(self.state_dir, name)
            if os.path.isfile(p):
                with open(p, errors="replace") as f:
                    self.assert_no_secret_in(f.read(), p)

    def close(self):
        self.fake.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def live_tokens(state, name=None):
    return [t for t in state["tokens"] if t.get("deletedAt") is None and (name is None or t["name"] == name)]


def journal_line(payload):
    """One journal record line (CRC-32 of the payload, then the payload)."""
    return "%08x %s\n" % (zlib.crc32(payload.encode()), payload)


def fill(path):
    """Writes to path until its file system is full; returns how much fitted."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    n = 0
    try:
        while True:
            n += os.write(fd, b"x" * 512)
    except OSError:
        return n
    finally:
        os.close(fd)


def proc_status(pid, key):
    """A field of /proc/PID/status in KiB (VmHWM, VmRSS, ...), or None."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_seconds(pid):
    """User plus system CPU time a process has used so far, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sanitized(pid):
    """Whether the process runs with AddressSanitizer (its memory figures mean little then)."""
    try:
        with open("/proc/%d/maps" % pid) as f:
            return "libasan" in f.read()
    except OSError:
        return False
