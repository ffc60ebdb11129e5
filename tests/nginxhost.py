"""Debian's nginx (/usr/sbin/nginx) on loopback, serving a folder `ias publish` wrote.

    with NginxHost(out_dir, tls=(leaf, [inter])) as web:
        web.url("https", "/channel.json")        # the TLS server
        web.url("http", "/channel.json")         # the plain HTTP server
        web.url("https", "/moved/Blink.tar")     # 302 to the other host, same file
        web.other_url("https", "/Blink.tar")     # the other host (localhost, its own ports)
        web.log()                                # what nginx saw: one dict per request

Everything lives in a temp prefix (conf, pid, logs, temp paths); nothing needs root. Four
server blocks: TLS and plain HTTP on 127.0.0.1 (the "front" host, with the `/moved/` redirect),
and TLS and plain HTTP on `localhost` with ports of their own (the "other" host). `.tar` files
go out at `rate` bytes a second (nginx limit_rate), so a test can cut a download part way.
The access log is JSON lines: request line, status, Range, If-None-Match, If-Modified-Since,
Host, the bytes of body sent, and the ETag and Last-Modified answered.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

NGINX = "/usr/sbin/nginx"

LOG_FORMAT = (
    '{"request":"$request","status":$status,"range":"$http_range",'
    '"if_none_match":"$http_if_none_match","if_modified_since":"$http_if_modified_since",'
    '"host":"$http_host","server_port":$server_port,"body_sent":$body_bytes_sent,'
    '"etag":"$sent_http_etag","last_modified":"$sent_http_last_modified"}'
)

CONF = """\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
{user}
events {{ worker_connections 64; }}
http {{
    types {{ application/json json; application/x-tar tar; application/octet-stream sig; }}
    default_type application/octet-stream;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    log_format ias escape=json '{log_format}';
    access_log {prefix}/access.log ias;
    sendfile off;
    etag on;
    ssl_certificate {prefix}/cert.pem;
    ssl_certificate_key {prefix}/key.pem;
{servers}
}}
"""

SERVER = """\
    server {{
        listen 127.0.0.1:{port}{ssl};
        server_name {name};
        root {root};
        location ~ \\.tar(\\.gz)?$ {{ limit_rate {rate}; }}
{extra}    }}
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def nginx_binary():
    if not os.path.exists(NGINX):
        raise RuntimeError("no %s: run `python -m tools.sysdeps` (Debian nginx-light)" % NGINX)
    return NGINX


class NginxHost:
    def __init__(self, root, tls, rate=65536):
        self.root = Path(root).resolve()
        self.tls = tls
        self.rate = rate
        self.ports = {}
        self._dir = None
        self._proc = None

    @property
    def prefix(self):
        return Path(self._dir.name)

    def url(self, scheme, path="/"):
        return "%s://127.0.0.1:%d%s" % (scheme, self.ports[("front", scheme)], path)

    def other_url(self, scheme, path="/"):
        return "%s://localhost:%d%s" % (scheme, self.ports[("other", scheme)], path)

    # -- the access log ---------------------------------------------------------------------
    def log(self):
        """Every request nginx finished, in order: request, method, path, status, range,
        if_none_match, if_modified_since, host, server_port, body_sent, and the etag and
        last_modified it answered with."""
        path = self.prefix / "access.log"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            parts = rec["request"].split(" ")
            rec["method"], rec["path"] = parts[0], parts[1] if len(parts) > 1 else ""
            out.append(rec)
        return out

    def mark(self):
        """A bookmark: log(since=mark) gives what came after it."""
        return len(self.log())

    def since(self, mark):
        return self.log()[mark:]

    def wait_for(self, pred, timeout=30):
        """The first log record (after waiting) for which pred(rec) is true."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for rec in self.log():
                if pred(rec):
                    return rec
            time.sleep(0.05)
        raise AssertionError("nginx logged no such request in %d s" % timeout)

    # -- life cycle -------------------------------------------------------------------------
    def _conf(self):
        leaf, chain = self.tls
        (self.prefix / "cert.pem").write_bytes(leaf.pem + b"".join(c.pem for c in chain))
        (self.prefix / "key.pem").write_bytes(leaf.key_pem)
        servers = []
        for host in ("front", "other"):
            for scheme in ("https", "http"):
                self.ports[(host, scheme)] = free_port()
        for host, name in (("front", "127.0.0.1"), ("other", "localhost")):
            for scheme in ("https", "http"):
                extra = ""
                if host == "front":
                    # a CDN-style move: the same file, on another host
                    target = "%s://localhost:%d" % (scheme, self.ports[("other", scheme)])
                    extra = "        location ^~ /moved/ {\n"
                    extra += "            rewrite ^/moved/(.*)$ %s/$1 redirect;\n" % target
                    extra += "        }\n"
                servers.append(
                    SERVER.format(
                        port=self.ports[(host, scheme)],
                        ssl=" ssl" if scheme == "https" else "",
                        name=name,
                        root=self.root,
                        rate=self.rate,
                        extra=extra,
                    )
                )
        # as root the workers would become `nobody`, who cannot read a test's temp folders
        user = "user root root;" if os.geteuid() == 0 else ""
        return CONF.format(
            prefix=self.prefix,
            user=user,
            log_format=LOG_FORMAT,
            servers="".join(servers),
        )

    def start(self, attempts=3):
        binary = nginx_binary()
        for _ in range(attempts):
            self._dir = tempfile.TemporaryDirectory(prefix="nginxhost-")
            (self.prefix / "tmp").mkdir()
            (self.prefix / "nginx.conf").write_text(self._conf())
            self._proc = subprocess.Popen(
                [binary, "-p", str(self.prefix), "-c", "nginx.conf", "-e", "error.log"]
                + ["-g", "daemon off;"],  # -e: not even a first line to /var/log/nginx
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            if self._ready():
                return self
            err = self._proc.stderr.read().decode(errors="replace") if self._proc.poll() else ""
            self.stop()
            if "Address already in use" not in err:  # a port taken since we picked it: retry
                raise RuntimeError("nginx did not start:\n" + err)
        raise RuntimeError("nginx could not get free ports in %d attempts" % attempts)

    def _ready(self, timeout=10):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self._proc.poll() is not None:
                return False
            try:
                for port in self.ports.values():
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self):
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGQUIT)  # graceful: workers finish, logs flushed
                try:
                    self._proc.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(self._proc.pid, signal.SIGKILL)
                    self._proc.wait()
            self._proc.stderr.close()
            self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir.name, ignore_errors=True)
            self._dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
