#!/usr/bin/env python3
"""A minimal file-backed S3 endpoint for Tansu's `s3://` storage engine, so a
local broker keeps its data across restarts (the Tansu build that
scripts/tansu.sh installs has no sqlite/file engine: only memory:// and s3://).

It implements just what Tansu 0.6's object_store client uses, on one bucket
namespace: PUT (with If-None-Match: * and If-Match: <etag>, checked
atomically: Tansu's optimistic concurrency needs both, or a restarted broker
overwrites its own offsets), GET/HEAD (with If-None-Match -> 304), DELETE,
POST ?delete, and ListObjectsV2 (prefix, delimiter, pagination).
LastModified is listed with nanosecond precision (Tansu orders batches by
it). No authentication; listen on loopback only.

  python3 scripts/tansu_s3.py --dir DIR --port PORT
"""
import argparse, bisect, os, re, threading, time, urllib.parse
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape, unescape

lock = threading.Lock()
index = {}  # key -> (size, mtime_ns, etag, <Contents> of a listing)
keys = []  # sorted keys
root = ""


def fname(key):
    return os.path.join(root, urllib.parse.quote(key, safe=""))


def load():
    for n in os.listdir(root):
        if n.endswith(".tmp"):
            os.unlink(os.path.join(root, n))
            continue
        st = os.stat(os.path.join(root, n))
        index[urllib.parse.unquote(n)] = entry(urllib.parse.unquote(n), st.st_size, st.st_mtime_ns)
    keys.extend(sorted(index))


def etag_of(size, mtime_ns):
    return '"%x-%x"' % (size, mtime_ns)


def entry(key, size, mtime):
    tag = etag_of(size, mtime)
    return size, mtime, tag, (f"<Contents><Key>{escape(key)}</Key><LastModified>{iso(mtime)}</LastModified>"
                              f"<ETag>{escape(tag)}</ETag><Size>{size}</Size><StorageClass>STANDARD</StorageClass></Contents>")


def iso(ns):
    t = time.gmtime(ns // 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + ".%09dZ" % (ns % 1_000_000_000)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else delayed ACKs add ~40 ms a request

    def log_message(self, *a):
        pass

    def split(self):
        u = urllib.parse.urlsplit(self.path)
        parts = u.path.lstrip("/").split("/", 1)
        key = urllib.parse.unquote(parts[1]) if len(parts) > 1 else ""
        return key, urllib.parse.parse_qs(u.query, keep_blank_values=True)

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                n = int(self.rfile.readline().split(b";")[0], 16)
                out += self.rfile.read(n)
                self.rfile.readline()
                if n == 0:
                    return out
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, code, data=b"", headers=(), ctype="application/xml"):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        if data or code not in (204, 304):
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and code != 304:
            self.wfile.write(data)

    def error(self, code, s3code):
        self.reply(code, f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{s3code}</Code><Message>{s3code}</Message></Error>".encode())

    def do_PUT(self):
        key, _ = self.split()
        data = self.body()
        if not key:  # CreateBucket
            return self.reply(200)
        with lock:
            cur = index.get(key)
            if self.headers.get("If-None-Match") == "*" and cur:
                return self.error(412, "PreconditionFailed")
            match = self.headers.get("If-Match")
            if match is not None and (cur is None or cur[2] != match):
                return self.error(412 if cur else 404, "PreconditionFailed" if cur else "NoSuchKey")
            tmp = fname(key) + ".%d.tmp" % threading.get_ident()
            with open(tmp, "wb") as f:
                f.write(data)
            mtime = time.time_ns()
            if cur and mtime <= cur[1]:
                mtime = cur[1] + 1
            os.utime(tmp, ns=(mtime, mtime))
            os.replace(tmp, fname(key))
            if cur is None:
                bisect.insort(keys, key)
            index[key] = entry(key, len(data), mtime)
            tag = index[key][2]
        self.reply(200, headers=[("ETag", tag)])

    def do_GET(self):
        key, q = self.split()
        if not key or "list-type" in q:
            return self.list(q)
        with lock:
            cur = index.get(key)
            if cur is None:
                return self.error(404, "NoSuchKey")
            try:
                with open(fname(key), "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                return self.error(404, "NoSuchKey")
        size, mtime, tag, _ = cur
        hdrs = [("ETag", tag), ("Last-Modified", formatdate(mtime / 1e9, usegmt=True)), ("Accept-Ranges", "bytes")]
        if self.headers.get("If-None-Match") in (tag, "*"):
            return self.reply(304, headers=hdrs)
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if m:
            a = int(m[1]) if m[1] else max(0, size - int(m[2]))
            b = int(m[2]) if m[1] and m[2] else size - 1
            hdrs.append(("Content-Range", f"bytes {a}-{b}/{size}"))
            return self.reply(206, data[a:b + 1], hdrs, "application/octet-stream")
        self.reply(200, data, hdrs, "application/octet-stream")

    do_HEAD = do_GET

    def do_DELETE(self):
        key, _ = self.split()
        with lock:
            self.delete(key)
        self.reply(204)

    def delete(self, key):
        if index.pop(key, None) is not None:
            keys.pop(bisect.bisect_left(keys, key))
            try:
                os.unlink(fname(key))
            except FileNotFoundError:
                pass

    def do_POST(self):  # DeleteObjects
        _, q = self.split()
        data = self.body().decode()
        if "delete" not in q:
            return self.error(501, "NotImplemented")
        gone = [unescape(k) for k in re.findall(r"<Key>(.*?)</Key>", data, re.S)]
        with lock:
            for k in gone:
                self.delete(k)
        out = "".join(f"<Deleted><Key>{escape(k)}</Key></Deleted>" for k in gone)
        self.reply(200, f'<?xml version="1.0" encoding="UTF-8"?><DeleteResult>{out}</DeleteResult>'.encode())

    def list(self, q):
        get = lambda k, d="": q.get(k, [d])[0]
        prefix, delim = get("prefix"), get("delimiter")
        start = get("continuation-token") or get("start-after")
        limit = int(get("max-keys") or 1000)
        contents, prefixes, token = [], [], None
        with lock:
            i = bisect.bisect_left(keys, prefix)
            if start:
                i = max(i, bisect.bisect_right(keys, start))
            while i < len(keys) and keys[i].startswith(prefix):
                k = keys[i]
                if len(contents) + len(prefixes) >= limit:
                    token = keys[i - 1]
                    break
                rest = k[len(prefix):]
                if delim and delim in rest:
                    p = prefix + rest.split(delim, 1)[0] + delim
                    prefixes.append(p)
                    i = bisect.bisect_left(keys, p + "\uffff")
                    continue
                contents.append(index[k][3])
                i += 1
        body = (f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>tansu</Name><Prefix>{escape(prefix)}</Prefix>'
                f"<KeyCount>{len(contents) + len(prefixes)}</KeyCount><MaxKeys>{limit}</MaxKeys>"
                f"<IsTruncated>{'true' if token else 'false'}</IsTruncated>"
                + (f"<NextContinuationToken>{escape(token)}</NextContinuationToken>" if token else "")
                + "".join(contents) + "".join(f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in prefixes)
                + "</ListBucketResult>")
        self.reply(200, body.encode())


def main():
    global root
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--port", type=int, required=True)
    a = ap.parse_args()
    root = os.path.abspath(a.dir)
    os.makedirs(root, exist_ok=True)
    load()
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.daemon_threads = True
    print(f"tansu_s3: {len(keys)} objects in {root}, listening on 127.0.0.1:{a.port}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
