#!/usr/bin/env python3
"""Writes tests/corpus/identity-requests.txt: request spellings aimed at the
host's identity (its role credentials, iam/info, identity-credentials, signed
identity documents, user-data).

The generated file is the source of truth and is committed; this script only
saves typing. Rerun it after editing (`python3 tests/corpus/generate.py`) and
commit both. Hand-written lines belong in the HAND section below, so that a
rerun keeps them.

Line format (read by tests/security.rs):

    METHOD TARGET [| FIELD]...

* METHOD and TARGET are separated by one space; TARGET runs to the next
  space. Fields are separated by " | ".
* A field is a header ("Name: value"), "@HTTP/1.0" (the request line's
  version; HTTP/1.1 otherwise), or "@forwards PATH": the one line kind that
  may reach the metadata service, and only as exactly PATH (a harmless path
  such as /latest/meta-data/instance-id, spelt with a trick that must not
  change what is asked upstream).
* "\\xHH" writes any byte (space, tab, NUL, CR, LF, "|", a backslash as
  \\x5c, bytes >= 0x80). A backslash not followed by xHH is an error.
* "{TOKEN}" in a header value becomes a valid IMDSv2 token for the caller.
* Blank lines and lines starting with "#" are ignored.

Every line without @forwards must be answered without asking the metadata
service anything; no answer may carry the fake metadata service's canary.
"""

from pathlib import Path

HOST_ROLE = "HostRole"

# The routes that name the host's identity, after the API version.
IDENTITY = [
    f"meta-data/iam/security-credentials/{HOST_ROLE}",
    f"meta-data/iam/security-credentials-extended/{HOST_ROLE}",
    "meta-data/iam/info",
    "meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
    "meta-data/identity-credentials/ec2/info",
    "dynamic/instance-identity/pkcs7",
    "dynamic/instance-identity/signature",
    "dynamic/instance-identity/rsa2048",
    "user-data",
]

VERSIONS = ["latest", "2016-09-02", "2021-03-23", "1.0", "0000-00-00", "9999-99-99", "LATEST", "Latest", "v1"]

lines: list[str] = []


def section(title: str) -> None:
    lines.append("")
    lines.append(f"# --- {title}")


def get(target: str, *fields: str) -> None:
    lines.append(" | ".join([f"GET {target}", *fields]))


def req(method: str, target: str, *fields: str) -> None:
    lines.append(" | ".join([f"{method} {target}", *fields]))


def enc(c: str, upper: bool = True) -> str:
    h = f"{ord(c):02X}"
    return "%" + (h if upper else h.lower())


def enc_all(s: str, upper: bool = True) -> str:
    return "".join(enc(c, upper) for c in s)


section("every identity route under every API version form")
for version in VERSIONS:
    for route in IDENTITY:
        get(f"/{version}/{route}")

section("doubled slashes at every position")
for route in IDENTITY[:6]:
    parts = route.split("/")
    for i in range(len(parts) + 1):
        get("/latest/" + "/".join(parts[:i]) + ("//" if i < len(parts) else "/") + "/".join(parts[i:]))
    get("//latest//" + "//".join(parts))
    get("///latest///" + "///".join(parts))

section("dot segments: /./ and climbing out of allowed prefixes")
for route in IDENTITY:
    get("/latest/./" + route)
    get("/latest/" + route.replace("/", "/./"))
    get("/latest/meta-data/instance-id/../../" + route)
    get("/latest/meta-data/placement/region/../../../" + route)
    get("/latest/dynamic/instance-identity/document/../../../" + route)
    get("/latest/meta-data/../" + route)
    get("/x/../latest/" + route)
    get("/../../../latest/" + route)
get(f"/latest/meta-data/instance-id/../iam/security-credentials/{HOST_ROLE}")
get("/latest/meta-data/instance-id/../iam/info")
get("/latest/meta-data/instance-id/../identity-credentials/ec2/info")
get("/latest/dynamic/instance-identity/document/../pkcs7")
get("/latest/dynamic/instance-identity/document/../signature")
get("/latest/dynamic/instance-identity/document/../rsa2048")
get("/latest/meta-data/../user-data")

section("encoded dot segments and dot-segment lookalikes after an allowed prefix")
for dots in ["%2e%2e", "%2E%2E", ".%2e", "%2e.", "%2E.", "..;", "..;x=1", "%2e%2e;", ".%2E;/."]:
    get(f"/latest/meta-data/instance-id/{dots}/iam/security-credentials/{HOST_ROLE}")
    get(f"/latest/dynamic/instance-identity/document/{dots}/pkcs7")
for dots in ["%252e%252e", "%25%32%65%25%32%65", "..%20", "..%09", "%20..", "..%00", "..%2f", "..%5c", "..%c0%af", "%c0%ae%c0%ae",
             "%e0%80%ae%e0%80%ae", "...", "..%2e", "..%ef%bc%8f", "%ef%bc%8e%ef%bc%8e", "..%3b", "..%3f", "..%23", "..%0d%0a"]:
    get(f"/latest/meta-data/iam/../instance-id/{dots}/iam/info")
    get(f"/latest/meta-data/placement/{dots}/iam/security-credentials/{HOST_ROLE}")
    get(f"/latest/meta-data/placement/{dots}/{dots}/user-data")

section("percent-encoding: each character alone, whole words, lower and upper hex")
for word, route in [
    ("iam", IDENTITY[0]),
    ("security-credentials", IDENTITY[0]),
    (HOST_ROLE, IDENTITY[0]),
    ("meta-data", IDENTITY[2]),
    ("info", IDENTITY[2]),
    ("identity-credentials", IDENTITY[3]),
    ("ec2-instance", IDENTITY[3]),
    ("instance-identity", IDENTITY[5]),
    ("pkcs7", IDENTITY[5]),
    ("user-data", IDENTITY[8]),
    ("latest", IDENTITY[2]),
]:
    target = f"/latest/{route}"
    for i in range(len(word)):
        spelt = word[:i] + enc(word[i], upper=i % 2 == 0) + word[i + 1:]
        get(target.replace("/" + word, "/" + spelt, 1))
    get(target.replace("/" + word, "/" + enc_all(word), 1))
    get(target.replace("/" + word, "/" + enc_all(word, upper=False), 1))

section("double and triple encoding")
get(f"/latest/meta-data/%2569am/security-credentials/{HOST_ROLE}")
get(f"/latest/meta-data/%25%36%39am/security-credentials/{HOST_ROLE}")
get(f"/latest/meta-data/%252569am/security-credentials/{HOST_ROLE}")
get("/latest/meta-data/%2569dentity-credentials/ec2/info")
get("/latest/meta-data/instance-id/%252e%252e/iam/info")
get(f"/latest/meta-data/instance-id/%252e%252e%252fiam%252fsecurity-credentials%252f{HOST_ROLE}")
get("/latest/meta-data/placement/%25%32%65%25%32%65%25%32%66iam%25%32%66info")
get("/latest/meta-data/instance-id%252f..%252f..%252fiam%252finfo")
get("/latest/meta-data/instance-id/%252E%252E/%252E%252E/user-data")
get("/latest/%2575ser-data")
get("/latest/dynamic/instance-identity/document/%252e%252e/pkcs7")
get("/latest/meta-data/instance-id/%25")
get("/latest/meta-data/instance-id/%2")
get("/latest/meta-data/instance-id/%zz/../../iam/info")

section("encoded slash, backslash, NUL and other separators")
for sep in ["%2f", "%2F", "%5c", "%5C", "\\x5c", "%00", "\\x00", "%3b", "%3B", "%3f", "%23", "%0a", "%0d", "%09", "%20", "%ef%bc%8f", "%e2%88%95", "%c0%af"]:
    get(f"/latest/meta-data/iam{sep}security-credentials{sep}{HOST_ROLE}")
    get(f"/latest/meta-data/instance-id/..{sep}..{sep}iam{sep}info")
get("/latest/meta-data\\x5ciam\\x5cinfo")
get("/latest\\x5cmeta-data\\x5ciam\\x5csecurity-credentials\\x5cHostRole")
get("/latest/meta-data/instance-id\\x5c..\\x5c..\\x5ciam\\x5cinfo")
get("/latest/user-data\\x00")
get("/latest/meta-data/iam/info\\x00/../../instance-id")

section("; parameters on any segment")
for params in [";", ";x", ";x=1", ";jsessionid=abc", ";/", ";%2f", ";.."]:
    get(f"/latest{params}/meta-data/iam/security-credentials/{HOST_ROLE}")
    get(f"/latest/meta-data{params}/iam/info")
    get(f"/latest/meta-data/iam{params}/security-credentials/{HOST_ROLE}")
    get(f"/latest/meta-data/iam/security-credentials{params}/{HOST_ROLE}")
    get(f"/latest/meta-data/iam/security-credentials/{HOST_ROLE}{params}")
    get(f"/latest/meta-data/identity-credentials{params}/ec2/info")
    get(f"/latest/user-data{params}")
    get(f"/latest/meta-data/instance-id{params}/../../iam/info")

section("trailing slashes and trailing junk")
for junk in ["/", "//", "/.", "/./", "/x", "/x/..", "/../" + HOST_ROLE, ".", "..", "%20", "%09", "%00", "~", "*", "!",
             "%2f", "/%2e", "?", "?x=1", "#", "#frag", "&", "$", "'", "(", ")", "%22", ":", "@"]:
    get(f"/latest/meta-data/iam/security-credentials/{HOST_ROLE}{junk}")
    get(f"/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance{junk}")
    get(f"/latest/dynamic/instance-identity/pkcs7{junk}")
get(f"/latest/meta-data/iam/security-credentials/{HOST_ROLE}/../{HOST_ROLE}")
get(f"/latest/meta-data/iam/security-credentials/Web/../{HOST_ROLE}")
get(f"/latest/meta-data/iam/security-credentials/Web/{HOST_ROLE}")
get(f"/latest/meta-data/iam/security-credentials-extended/Web/{HOST_ROLE}")
get("/latest/meta-data/iam/info/")
get("/latest/meta-data/iam/info/x")
get("/latest/meta-data/iam/infox")
get("/latest/meta-data/iam/security-credentials-extended-x/HostRole")
get("/latest/meta-data/iam/security-credentialsx/HostRole")
get("/latest/meta-data/iamx/security-credentials/HostRole")
get("/latest/meta-data/iam-/info")
get("/latest/meta-data/identity-credentials/")
get("/latest/meta-data/identity-credentials")
get("/latest/meta-data/identity-credentials/ec2/")
get("/latest/meta-data/identity-credentials/ec2/security-credentials/")
get("/latest/dynamic/instance-identity/")
get("/latest/dynamic/instance-identity")
get("/latest/dynamic/fws/instance-monitoring")
get("/latest/user-data/")

section("case variants")
for spelt in [
    f"meta-data/IAM/security-credentials/{HOST_ROLE}",
    f"meta-data/Iam/Security-Credentials/{HOST_ROLE}",
    f"META-DATA/IAM/SECURITY-CREDENTIALS/{HOST_ROLE}",
    f"Meta-Data/iam/security-credentials-EXTENDED/{HOST_ROLE}",
    f"meta-data/iam/security-credentials/{HOST_ROLE.lower()}",
    f"meta-data/iam/security-credentials/{HOST_ROLE.upper()}",
    "meta-data/IAM/INFO",
    "meta-data/iam/Info",
    "META-DATA/IDENTITY-CREDENTIALS/EC2/SECURITY-CREDENTIALS/EC2-INSTANCE",
    "meta-data/Identity-Credentials/ec2/info",
    "meta-data/identity-credentials/EC2/INFO",
    "Dynamic/Instance-Identity/PKCS7",
    "DYNAMIC/INSTANCE-IDENTITY/SIGNATURE",
    "dynamic/instance-identity/RSA2048",
    "dynamic/Instance-Identity/Document/../Pkcs7",
    "USER-DATA",
    "User-Data",
    "meta-data/Instance-Id/../iam/info",
    "META-DATA/%49%41%4D/INFO",
]:
    get(f"/latest/{spelt}")
    get(f"/2016-09-02/{spelt}")

section("absolute-form request targets")
for authority in ["169.254.169.254", "169.254.169.254:80", "localhost", "evil.example", "user:pw@169.254.169.254",
                  "[fd00:ec2::254]", "169.254.169.254.nip.io", "0xa9fea9fe", "2852039166"]:
    get(f"http://{authority}/latest/meta-data/iam/security-credentials/{HOST_ROLE}")
    get(f"http://{authority}/latest/meta-data/instance-id/../iam/info")
get("HTTP://169.254.169.254/latest/meta-data/iam/info")
get("https://169.254.169.254/latest/meta-data/iam/info")
get("http://169.254.169.254//latest//meta-data//identity-credentials//ec2//info")
get("http://169.254.169.254/latest/meta-data/%69am/info")
get("http://169.254.169.254/latest/user-data")
get("http://169.254.169.254/latest/dynamic/instance-identity/pkcs7?x=1")
get("http://169.254.169.254")
get("http://169.254.169.254?/latest/meta-data/iam/info")
get("http:/latest/meta-data/iam/info")
get("http:latest/meta-data/iam/info")
get("//169.254.169.254/latest/meta-data/iam/info")
get("ftp://169.254.169.254/latest/meta-data/iam/info")
get("*")
req("OPTIONS", "*")
req("CONNECT", "169.254.169.254:80")
get("169.254.169.254:80")
get("latest/meta-data/iam/info")
get("meta-data/iam/info")

section("overlong paths")
get("/latest/meta-data/" + "./" * 600 + "iam/info")
get("/latest/meta-data/" + "x/../" * 250 + "iam/info")
get("/latest/meta-data/" + "/" * 1100 + "iam/info")
get("/latest/meta-data/instance-id/" + "a" * 1100 + "/../../iam/info")
get("/latest/meta-data/iam/security-credentials/" + "A" * 4000)
get("/latest/meta-data/iam/info?" + "a" * 8000)
get("/latest/meta-data/iam/info" + "%2e" * 400)
get("/latest/meta-data/iam/security-credentials/" + HOST_ROLE + "/" * 1000)
get("/latest/meta-data/" + "%2e%2e/" * 200 + "iam/info")
get("/latest/user-data/" + "." * 2000)

section("query strings and fragments")
for tail in ["?", "?x", "?x=1", "?/../../iam/info", "?../../instance-id", "?%2f..%2f", "#", "#x", "#/../../instance-id",
             "?#", "?x#y", "?url=http://169.254.169.254/latest/meta-data/instance-id"]:
    get(f"/latest/meta-data/iam/security-credentials/{HOST_ROLE}{tail}")
    get(f"/latest/meta-data/iam/info{tail}")
    get(f"/latest/user-data{tail}")
get("/latest/meta-data/instance-id?/../../iam/info", "@forwards /latest/meta-data/instance-id")
get("/latest/meta-data/instance-id?x=/latest/meta-data/iam/info", "@forwards /latest/meta-data/instance-id")
get("/latest/meta-data/instance-id#/../../iam/info", "@forwards /latest/meta-data/instance-id")
get("/latest/meta-data/placement/region?../../../iam/security-credentials/HostRole", "@forwards /latest/meta-data/placement/region")
get("/latest/meta-data/instance-id;/../../iam/info")
get("/latest/meta-data/instance-id;x=../../iam/info")
get("/latest/meta-data/instance-%69d", "@forwards /latest/meta-data/instance-id")
get("/latest//meta-data/./instance-id/", "@forwards /latest/meta-data/instance-id/")
get("/latest/meta-data/iam/../instance-id", "@forwards /latest/meta-data/instance-id")

section("unicode lookalikes, raw and encoded")
for spelt in [
    "%EF%BD%89am",          # fullwidth i
    "%D1%96am",             # Cyrillic i
    "i%C9%91m",             # Latin alpha
    "%E2%80%8Biam",         # zero-width space before
    "iam%E2%80%8B",         # zero-width space after
    "ia%E1%B9%81",          # m with dot
    "%C4%B1am",             # dotless i
    "\\xef\\xbd\\x89am",    # fullwidth i, raw bytes
    "\\xd1\\x96am",         # Cyrillic i, raw bytes
    "iam\\xc2\\xa0",        # no-break space, raw
    "iam%C2%A0",            # no-break space
    "%EF%BC%85%36%39am",    # fullwidth percent
    "IAM%E2%84%AA",         # Kelvin sign
]:
    get(f"/latest/meta-data/{spelt}/security-credentials/{HOST_ROLE}")
    get(f"/latest/meta-data/{spelt}/info")
get("/latest/meta-data/instance-id/%EF%BC%8E%EF%BC%8E/%EF%BC%8E%EF%BC%8E/iam/info")
get("/latest/meta-data/instance-id/..%EF%BC%8F..%EF%BC%8Fiam%EF%BC%8Finfo")
get("/latest/meta-data/instance-id/..%E2%88%95..%E2%88%95iam%E2%88%95info")
get("/latest/meta-data/instance-id/\\xe2\\x80\\xa5/iam/info")
get("/latest/meta-data/%E2%81%84iam%E2%81%84info")
get("/latest/u%C5%BFer-data")
get("/latest/meta-data/identity-credentials/ec2/%C5%BFecurity-credentials/ec2-instance")

section("tabs, spaces, CR and LF in and around the target")
get("/latest/meta-data/iam/info\\x09")
get("/latest/meta-data/iam\\x09/info")
get("/latest/meta-data/iam\\x20/info")
get("/latest/meta-data/instance-id\\x20/../../iam/info")
get("/latest/meta-data/instance-id/..\\x20/..\\x20/iam/info")
get("/latest/meta-data/%20iam/info")
get("/latest/meta-data/iam%20/info")
get("/latest/meta-data/iam%09/info")
get("/latest/meta-data/instance-id/..%20/iam/info")
get("/latest/meta-data/instance-id/%20../iam/info")
get("/latest/meta-data/instance-id/..%09/iam/info")
get("/latest/meta-data/instance-id/..%0b/iam/info")
get("/latest/meta-data/instance-id/..%0c/iam/info")
get("/latest/meta-data/iam/info\\x0d\\x0aX-Injected:\\x201")
get("/latest/meta-data/instance-id\\x0d\\x0aGET\\x20/latest/meta-data/iam/info")
get("/latest/meta-data/iam/info%0d%0aHost:%20x")
get("\\x20/latest/meta-data/iam/info")
get("/latest/meta-data/iam/info\\x20HTTP/1.1\\x0d\\x0aX:")

section("methods other than GET and HEAD")
for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "PROPFIND", "MKCOL", "COPY", "MOVE", "LOCK",
               "PURGE", "get", "Get", "HEAD", "FOO", "G\\x00ET"]:
    req(method, f"/latest/meta-data/iam/security-credentials/{HOST_ROLE}")
    req(method, "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance")
    req(method, "/latest/user-data")
req("PUT", "/latest/api/token/../../meta-data/iam/info", "X-aws-ec2-metadata-token-ttl-seconds: 60")
req("PUT", "/latest/meta-data/iam/info", "X-aws-ec2-metadata-token-ttl-seconds: 60")
req("PUT", "/latest/api/token%2f..%2f..%2fmeta-data%2fiam%2finfo", "X-aws-ec2-metadata-token-ttl-seconds: 60")
req("POST", "/latest/dynamic/instance-identity/pkcs7", "Content-Length: 4", "Content-Type: text/plain")

section("headers: Host, forwarding, rewriting, tokens")
for headers in [
    ("Host: 169.254.169.254",),
    ("Host: evil.example",),
    ("Host: localhost:8080",),
    ("Host: 169.254.169.254", "Host: evil.example"),
    ("X-Forwarded-For: 169.254.169.254",),
    ("X-Forwarded-For: 127.0.0.1",),
    ("X-Forwarded-Host: 169.254.169.254",),
    ("X-Real-IP: 10.0.0.1",),
    ("Forwarded: for=127.0.0.1;host=169.254.169.254",),
    ("X-Original-URL: /latest/meta-data/instance-id",),
    ("X-Rewrite-URL: /latest/meta-data/instance-id",),
    ("X-aws-ec2-metadata-token: {TOKEN}",),
    ("X-aws-ec2-metadata-token: {TOKEN}", "X-Forwarded-For: 10.0.0.1"),
    ("X-aws-ec2-metadata-token: garbage",),
    ("X-aws-ec2-metadata-token: ",),
    ("X-aws-ec2-metadata-token: {TOKEN}", "X-aws-ec2-metadata-token: {TOKEN}"),
    ("Transfer-Encoding: chunked",),
    ("Content-Length: 0",),
    ("Connection: upgrade", "Upgrade: h2c"),
    ("Expect: 100-continue",),
]:
    get(f"/latest/meta-data/iam/security-credentials/{HOST_ROLE}", *headers)
    get("/latest/meta-data/identity-credentials/ec2/info", *headers)
get("/latest/dynamic/instance-identity/pkcs7", "@HTTP/1.0")
get("/latest/meta-data/iam/info", "@HTTP/1.0")
get(f"/latest/meta-data/iam/security-credentials/{HOST_ROLE}", "@HTTP/1.0", "Host: 169.254.169.254")
get("/latest/meta-data/instance-id", "X-Original-URL: /latest/meta-data/iam/info", "@forwards /latest/meta-data/instance-id")
get("/latest/meta-data/instance-id", "X-Rewrite-URL: /latest/user-data", "@forwards /latest/meta-data/instance-id")
get("/latest/meta-data/instance-id", "Host: 169.254.169.254/latest/meta-data/iam/info", "@forwards /latest/meta-data/instance-id")
get("/latest/meta-data/instance-id", "X-HTTP-Method-Override: PUT", "@forwards /latest/meta-data/instance-id")

HAND = r"""
# --- by hand: spellings that went through peers
GET /latest/meta-data/iam/security-credentials
GET /latest/meta-data/iam/security-credentials/HostRole/
GET /latest/meta-data/iam/security-credentials/HostRole/extra
GET /latest/meta-data/iam/security-credentials-extended/
GET /latest/meta-data/iam/security-credentials-extended/HostRole/
GET /latest/meta-data/iam/security-credentials/%2e%2e/security-credentials/HostRole
GET /latest/meta-data/iam/security-credentials/HostRole%2f
GET /latest/meta-data/iam/security-credentials/HostRole%23
GET /latest/meta-data/iam/security-credentials/HostRole%3f
GET /latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance/
GET /latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance/..
GET /latest/meta-data/identity-credentials/ec2/../ec2/info
GET /latest/meta-data/instance-id/..;/iam/info
GET /latest/meta-data/placement/availability-zone/..;/..;/iam/info
GET /latest/dynamic/instance-identity/document;/../pkcs7
GET /latest/dynamic/instance-identity/document/..%2fpkcs7
GET /latest/dynamic/instance-identity/document%2f..%2fpkcs7
GET /latest/dynamic/instance-identity/document/%2e%2e/signature
GET /latest/dynamic/instance-identity/rsa
GET /latest/dynamic/fws/instance-monitoring/
GET /latest/meta-data/./iam/./security-credentials/./HostRole/.
GET /latest/meta-data/iam/security-credentials/HostRole/%2e
GET /latest/meta-data/iam/security-credentials/HostRole/%2E%2E/HostRole
GET /./latest/./meta-data/./iam/./info
GET /latest/meta-data/iam/info%3bx
GET /latest/meta-data/iam/info;%2f..%2f..%2finstance-id
"""

out = Path(__file__).with_name("identity-requests.txt")
seen: set[str] = set()
body: list[str] = []
for line in lines:
    if line and not line.startswith("#"):
        if line in seen:
            continue
        seen.add(line)
    body.append(line)
for line in HAND.strip("\n").splitlines():
    if line and not line.startswith("#"):
        if line in seen:
            continue
        seen.add(line)
    body.append(line)

header = """\
# Request spellings aimed at the host's identity: its role credentials,
# iam/info, identity-credentials, the signed identity documents, user-data.
# tests/security.rs sends every line to the proxy (in process and through the
# real listener) against a metadata service that answers a canary on every
# path. No answer may carry the canary, and nothing may reach the metadata
# service except the @forwards lines, each as exactly its harmless path.
#
# Format: METHOD TARGET [| FIELD]... ; a field is "Name: value", "@HTTP/1.0" or
# "@forwards PATH"; "\\xHH" writes any byte; "{TOKEN}" is a valid IMDSv2 token.
# Generated in part by generate.py (which documents the format); this file is
# the source of truth: edit it by hand or through the script, and commit both.
"""
out.write_text(header + "\n".join(body) + "\n")
print(f"{out}: {len(seen)} requests")
