#!/usr/bin/python3
"""The second peer of `make bench`: the rotation as one Python process would do it, written
to be cheap. The same requests and the same durable writes as dtrotated's rotation, one
token after the other:

  1. look the old token up           POST   /api/v1/tokens/lookup   {"token": OLD}
  2. journal `create`, fdatasync     (before the create is sent, as dtrotated does)
  3. create a new one, same name and scopes
                                     POST   /api/v1/tokens          {"name","scopes","expiresIn"}
  4. stage it: a new file next to the token file, one write, fsync
  5. look the new token up for its id (and to be sure it works)
  6. rename over the token file, fsync the directory; journal `delivered`, fdatasync
  7. journal `retire` + `rotated` (one write), fdatasync
  8. revoke the old token            PUT    /api/v1/tokens/ID       {"revoked": true}
     journal `revoked`, fdatasync
  9. confirm the revoke              GET    /api/v1/tokens/ID
 10. delete the old token            DELETE /api/v1/tokens/ID
     journal `deleted`, fdatasync

Per token: 6 requests on kept-alive connections (http.client; the create too, which
dtrotated sends on a connection of its own), 5 fdatasync, 2 fsync, as dtrotated.

Usage: rotate-python.py URL MANAGEMENT_TOKEN_FILE JOURNAL -l LIST   (one token file per line)

Python standard library only; plain HTTP. Stops at the first failure."""
import http.client
import json
import os
import sys
import urllib.parse
import zlib


def main():
    if len(sys.argv) != 6 or sys.argv[4] != "-l":
        sys.exit("usage: rotate-python.py URL MANAGEMENT_TOKEN_FILE JOURNAL -l LIST")
    url = urllib.parse.urlsplit(sys.argv[1])
    with open(sys.argv[2]) as f:
        mgmt = f.read().strip()
    with open(sys.argv[5]) as f:
        files = [line.rstrip("\n") for line in f if line.strip()]
    os.umask(0o077)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    headers = {"Authorization": "Api-Token " + mgmt, "Accept": "application/json",
               "Content-Type": "application/json; charset=utf-8"}
    journal = os.open(sys.argv[3], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)

    def call(method, path, body=None):
        conn.request(method, "/api/v1/tokens" + path,
                     body=json.dumps(body).encode() if body is not None else None, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        if resp.status >= 300:
            sys.exit("%s %s: HTTP %d %s" % (method, path, resp.status, raw[:200]))
        return json.loads(raw) if raw else None

    def record(*lines):
        data = "".join("%08x %s\n" % (zlib.crc32(x.encode()), x) for x in lines).encode()
        if os.write(journal, data) != len(data):
            sys.exit("short write to the journal")
        os.fdatasync(journal)

    for path in files:
        with open(path) as f:
            old = f.read().strip()
        info = call("POST", "/lookup", {"token": old})
        old_id, name, scopes = info["id"], info["name"], info["scopes"]

        record("create job=%s old=%s name=%s" % (name, old_id, name))
        new = call("POST", "", {"name": name, "scopes": scopes,
                                "expiresIn": {"value": 60, "unit": "DAYS"}})["token"]

        d, base = os.path.split(path)
        staged = os.path.join(d, ".%s.new" % base)
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, (new + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

        new_id = call("POST", "/lookup", {"token": new})["id"]

        os.rename(staged, path)
        dfd = os.open(d or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        record("delivered job=%s id=%s old=%s" % (name, new_id, old_id))
        record("retire job=%s id=%s" % (name, old_id), "rotated job=%s id=%s old=%s" % (name, new_id, old_id))

        call("PUT", "/" + old_id, {"revoked": True})
        record("revoked job=%s id=%s" % (name, old_id))
        if not call("GET", "/" + old_id).get("revoked"):
            sys.exit("%s: %s not revoked" % (name, old_id))
        call("DELETE", "/" + old_id)
        record("deleted job=%s id=%s" % (name, old_id))
    conn.close()
    os.close(journal)


if __name__ == "__main__":
    main()
