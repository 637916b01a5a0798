#!/usr/bin/python3
"""A small HTTP server for test_download: serves the files of one folder on 127.0.0.1 with Range
support (Python's http.server has none) and misbehaves on request.

    range_http_server.py <folder> <log file>

Binds 127.0.0.1 on a free port and prints the port on stdout (one line). Appends one line per
request to the log file: "<method> <path> <Range header or ->". Exits when stdin reaches end of
file, so it never outlives the test that started it, even one that crashed.

Paths:
    /<name>                 the file, honouring "Range: bytes=<a>-[<b>]" (206 + Content-Range;
                            416 if <a> is past the end)
    /norange/<name>         the file whole with 200, whatever the Range header says
    /cut/<n>/<name>         like /<name> (Range honoured), with the headers announcing the full
                            length, but the connection is closed after <n> bytes of the body
    /stall/<n>/<name>       like /cut/, but after <n> bytes the server goes silent, keeping the
                            connection open
    /redirect/<path>        302 to /<path>
anything else               404
"""
import http.server
import os
import re
import socket
import sys
import threading
import time
import urllib.parse


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # the request log below replaces stderr chatter
        pass

    def do_HEAD(self):
        self.serve(head=True)

    def do_GET(self):
        self.serve(head=False)

    def serve(self, head):
        with open(self.server.log_path, "a") as log:
            log.write(f"{self.command} {self.path} {self.headers.get('Range', '-')}\n")
        path = urllib.parse.urlsplit(self.path).path
        honour_range, limit, stall = True, None, False
        if path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", path[len("/redirect"):])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path.startswith("/norange/"):
            honour_range, path = False, path[len("/norange"):]
        match = re.match(r"^/(cut|stall)/(\d+)(/.*)$", path)
        if match:
            stall, limit, path = match.group(1) == "stall", int(match.group(2)), match.group(3)
        name = path.lstrip("/")
        file = os.path.join(self.server.folder, name)
        if not name or "/" in name or not os.path.isfile(file):
            self.send_error(404)
            return
        with open(file, "rb") as f:
            data = f.read()
        start, end = 0, len(data)
        spec = self.headers.get("Range")
        status = 200
        if honour_range and spec:
            m = re.match(r"^bytes=(\d+)-(\d*)$", spec.strip())
            if m:
                start = int(m.group(1))
                if m.group(2):
                    end = min(end, int(m.group(2)) + 1)
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
        body = data[start:end]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.end_headers()
        if head:
            return
        if limit is None:
            self.wfile.write(body)
            return
        self.wfile.write(body[:limit])
        self.wfile.flush()
        if stall:
            time.sleep(60)  # the client gives up first; the test kills the server anyway
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that hangs up early (the tests do) is not an error worth a traceback


def main():
    folder, log_path = sys.argv[1], sys.argv[2]
    server = Server(("127.0.0.1", 0), Handler)
    server.folder, server.log_path = folder, log_path
    open(log_path, "a").close()

    def watch_parent():
        sys.stdin.buffer.read()  # returns at end of file: the test closed the pipe or died
        os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
