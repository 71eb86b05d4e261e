#!/usr/bin/env python3
"""In-memory Solr stand-in for CKAN's tests and the local demo.

NOT FOR PRODUCTION. Production must use a real Apache Solr with CKAN's
schema.xml. This file exists only because CKAN 2.11/2.12 talk to Solr on
every dataset and organization write and no Solr can be installed where the
tests and the demo run.

It speaks the small part of the Solr HTTP protocol that CKAN (via pysolr)
uses, for any core name (``http://HOST:PORT/solr/<core>``; each core name has
its own index):

* ``select``: q (lucene syntax, or dismax with qf/mm/tie), fq, rows, start,
  sort, fl, facet.field/limit/mincount/sort, wt=json answers;
* ``update``: JSON and XML bodies (add, delete by id or query, commit,
  optimize) and ``commit=true`` in the URL;
* ``schema?wt=schema.xml``, ``admin/file?file=schema.xml``, ``schema``,
  ``schema/version`` (CKAN checks the schema name at startup), ``admin/ping``.

Field semantics follow CKAN's schema.xml closely enough for package_search:
string fields match exactly (case-sensitive), text fields are tokenized,
lower-cased, ASCII-folded and crudely stemmed, dates and numbers compare as
such, only stored fields are returned, and a list for a single-valued field
is rejected as Solr would. Relevance scores are rough. Documents are visible
immediately (no separate commit point); a commit saves ``--data-file``.
Unsupported syntax is logged to stderr and answered on a best-effort basis.

Usage::

    python scripts/solr_standin.py --host 127.0.0.1 --port 8983
    python scripts/solr_standin.py --data-file /path/index.json --verbose
    # ckan.ini: solr_url = http://127.0.0.1:8983/solr/ckan
"""
import argparse
import datetime
import json
import logging
import os
import re
import signal
import threading
import unicodedata
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("solr_standin")

#: CKAN 2.11 accepts schema versions up to 2.11, CKAN 2.12 up to 2.12.
SCHEMA_NAME = "ckan-2.11"

# The parts of CKAN's schema.xml (ckan/config/solr/schema.xml) that matter.
TEXT_FIELDS = {
    "title", "notes", "author", "author_email", "maintainer",
    "maintainer_email", "res_name", "res_description", "text", "urls",
    "depends_on", "dependency_of", "derives_from", "has_derivation",
    "links_to", "linked_from", "child_of", "parent_of"}
NGRAM_FIELDS = {"title_ngram": "title", "name_ngram": "name"}
DATE_FIELDS = {"metadata_created", "metadata_modified", "indexed_ts"}
NUMBER_FIELDS = {"views_total", "views_recent", "resources_accessed_total",
                 "resources_accessed_recent"}
STORED_FIELDS = {
    "index_id", "id", "site_id", "title", "entity_type", "dataset_type",
    "state", "name", "revision_id", "version", "url", "ckan_url",
    "download_url", "notes", "author", "author_email", "maintainer",
    "maintainer_email", "license", "license_id", "tags", "groups",
    "organization", "capacity", "res_name", "res_description", "res_format",
    "res_url", "res_type", "metadata_created", "metadata_modified",
    "indexed_ts", "data_dict", "validated_data_dict", "_version_"}
MULTI_FIELDS = TEXT_FIELDS - {"title", "notes", "author", "author_email",
                              "maintainer", "maintainer_email"} | {
    "tags", "groups", "permission_labels", "res_format", "res_url",
    "res_type"}
URL_SOURCES = ["url", "ckan_url", "download_url", "res_url"]
TEXT_SOURCES = ["urls", "name", "title", "license", "notes", "tags", "groups",
                "organization", "res_name", "res_description", "maintainer",
                "author"]
COPIED_PREFIXES = ("extras_", "res_extras_", "vocab_")


def field_type(name):
    if name in NGRAM_FIELDS:
        return "ngram"
    if name in TEXT_FIELDS or name.startswith(("extras_", "res_extras_")):
        return "text"
    if name in DATE_FIELDS or name.endswith("_date"):
        return "date"
    if name in NUMBER_FIELDS:
        return "number"
    return "string"


def is_stored(name):
    return (name in STORED_FIELDS or name.endswith("_date")
            or name.startswith(COPIED_PREFIXES))


def is_multi(name):
    return name in MULTI_FIELDS or name.startswith(("res_extras_", "vocab_"))


class SolrError(Exception):
    """Answered as a Solr error response (pysolr reads error.msg)."""

    def __init__(self, msg, code=400):
        super().__init__(msg)
        self.code = code


# ---------------------------------------------------------------- values

def as_str(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def raw_values(doc, field):
    value = doc.get(field)
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [as_str(v) for v in items if v is not None]


def values(doc, field):
    """Field values as Solr would have indexed them, copyFields included."""
    if field == "text":
        sources = TEXT_SOURCES + [k for k in doc
                                  if k.startswith(COPIED_PREFIXES)]
        return raw_values(doc, "text") + [v for s in sources
                                          for v in values(doc, s)]
    if field == "urls":
        return raw_values(doc, "urls") + [v for s in URL_SOURCES
                                          for v in raw_values(doc, s)]
    if field in NGRAM_FIELDS:
        return raw_values(doc, NGRAM_FIELDS[field])
    return raw_values(doc, field)


def stem(token):
    """Crude plural stripping; query and index use the same, which suffices."""
    if len(token) > 4 and token.endswith("ies"):
        return token[:-3] + "y"
    if len(token) > 3 and token.endswith("s") and not token.endswith(
            ("ss", "us", "is")):
        return token[:-1]
    return token


def analyze(text, stemming=True):
    """Tokens of a text field: split on punctuation, case change, digits."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    tokens = []
    for part in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+|[^\W\d_]+",
                           text):
        part = part.lower()
        tokens.append(stem(part) if stemming else part)
    return tokens


def wildcard_re(pattern):
    return re.compile(".*".join(".".join(re.escape(b) for b in a.split("?"))
                                for a in pattern.split("*")), re.S)


DATE_MATH_RE = re.compile(r"([+-])(\d+)([A-Z]+)|/([A-Z]+)")
UNITS = ["YEAR", "MONTH", "DAY", "HOUR", "MINUTE", "SECOND"]


def parse_date(text):
    """An ISO date or NOW-style date math as a naive UTC datetime (or None)."""
    text = text.strip().strip('"')
    if text.upper().startswith("NOW"):
        date = datetime.datetime.now(datetime.timezone.utc)
        for sign, num, unit, round_unit in DATE_MATH_RE.findall(
                text[3:].upper()):
            unit = (unit or round_unit).rstrip("S")
            if unit not in UNITS:
                log.warning("unsupported date math unit in %r", text)
                continue
            if round_unit:
                idx = UNITS.index(unit)
                date = date.replace(microsecond=0, **{
                    k: v for i, (k, v) in enumerate([
                        ("month", 1), ("day", 1), ("hour", 0), ("minute", 0),
                        ("second", 0)]) if i >= idx})
            else:
                n = int(num) * (-1 if sign == "-" else 1)
                if unit in ("YEAR", "MONTH"):
                    months = date.month - 1 + n * (12 if unit == "YEAR" else 1)
                    date = date.replace(year=date.year + months // 12,
                                        month=months % 12 + 1,
                                        day=min(date.day, 28))
                else:
                    date += datetime.timedelta(**{unit.lower() + "s": n})
    else:
        try:
            date = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    if date.tzinfo:
        date = date.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return date.replace(microsecond=date.microsecond // 1000 * 1000)


def format_date(date):
    """Solr's canonical form: UTC, 'Z', milliseconds only when non-zero."""
    ms = f".{date.microsecond // 1000:03d}" if date.microsecond else ""
    return date.strftime("%Y-%m-%dT%H:%M:%S") + ms + "Z"


def parse_number(text):
    try:
        return float(text.strip('"'))
    except ValueError:
        return None


def converter(field):
    ftype = field_type(field)
    if ftype == "date":
        return parse_date
    if ftype == "number":
        return parse_number
    if ftype == "text":
        return str.lower
    return lambda v: v


# ---------------------------------------------------------------- parser

class QueryParser:
    """Lucene-syntax parser producing small tuples.

    Nodes: ("bool", [[occur, node], ...]) with occur must/should/not,
    ("term", field, value, wildcard), ("phrase", field, text),
    ("range", field, low, high, low_inclusive, high_inclusive).
    field None means "the dismax qf fields".
    """

    def __init__(self, text, default_field="text", default_op="OR"):
        self.s, self.i = text, 0
        self.default_field = default_field
        self.op_and = default_op.upper() == "AND"

    def parse(self):
        return self._group(self.default_field, top=True)

    def _ws(self):
        while self.i < len(self.s) and self.s[self.i].isspace():
            self.i += 1

    def _keyword(self):
        m = re.match(r"(AND|OR|NOT|&&|\|\|)(?=[\s(]|$)", self.s[self.i:])
        return m.group(1) if m else None

    def _group(self, field, top=False):
        clauses, conj = [], None
        while True:
            self._ws()
            if self.i >= len(self.s):
                break
            if self.s[self.i] == ")":
                self.i += 1
                if top:
                    log.warning("unbalanced ')' in %r", self.s)
                    continue
                break
            keyword = self._keyword()
            if keyword in ("AND", "&&", "OR", "||"):
                self.i += len(keyword)
                conj = "AND" if keyword in ("AND", "&&") else "OR"
                continue
            mod = None
            if keyword == "NOT":
                self.i += 3
                mod = "not"
            elif self.s[self.i] in "+-!":
                mod = "must" if self.s[self.i] == "+" else "not"
                self.i += 1
            node = self._clause(field)
            if node is not None:
                self._add(clauses, conj, mod, node)
            conj = None
        return ("bool", clauses)

    def _add(self, clauses, conj, mod, node):
        """Occur rules of Lucene's QueryParserBase.addClause (q.op aware)."""
        if clauses and clauses[-1][0] != "not":
            if conj == "AND":
                clauses[-1][0] = "must"
            elif conj == "OR" and self.op_and:
                clauses[-1][0] = "should"
        if mod:
            occur = mod
        elif self.op_and:
            occur = "should" if conj == "OR" else "must"
        else:
            occur = "must" if conj == "AND" else "should"
        clauses.append([occur, node])

    def _word(self, stop_at_colon):
        start = self.i
        while self.i < len(self.s):
            c = self.s[self.i]
            if c == "\\":
                self.i += 2
                continue
            if c.isspace() or c in "()" or (stop_at_colon and c == ":"):
                break
            self.i += 1
        return self.s[start:self.i]

    def _suffix(self):
        m = re.match(r"[\^~][\d.]*", self.s[self.i:])
        if m:
            self.i += m.end()

    def _clause(self, field, fielded=False):
        if self.i >= len(self.s):
            return None
        c = self.s[self.i]
        if c == "{" and self.s.startswith("{!", self.i):
            end = self.s.find("}", self.i)
            log.warning("ignoring local params %r", self.s[self.i:end + 1])
            self.i = len(self.s) if end < 0 else end + 1
            return self._clause(field, fielded)
        if c == "(":
            self.i += 1
            node = self._group(field)
        elif c == '"':
            end = self.i + 1
            while end < len(self.s) and self.s[end] != '"':
                end += 2 if self.s[end] == "\\" else 1
            text = unescape(self.s[self.i + 1:end])
            self.i = end + 1
            node = ("phrase", field, text)
        elif c in "[{":
            end = re.compile(r"[\]}]").search(self.s, self.i)
            end = end.start() if end else len(self.s)
            low, _, high = self.s[self.i + 1:end].partition(" TO ")
            bounds = [None if b.strip() in ("*", "") else
                      unescape(b.strip().strip('"')) for b in (low, high)]
            node = ("range", field, bounds[0], bounds[1], c == "[",
                    end < len(self.s) and self.s[end] == "]")
            self.i = end + 1
        else:
            word = self._word(stop_at_colon=not fielded)
            if word and not fielded and self.s[self.i:self.i + 1] == ":":
                self.i += 1
                self._ws()
                return self._clause(unescape(word), fielded=True)
            if not word:
                log.warning("skipping unexpected %r in %r", c, self.s)
                self.i += 1
                return None
            word = re.sub(r"(?<!\\)[\^~][\d.]*$", "", word)
            wildcard = bool(re.search(r"(?<!\\)[*?]", word))
            node = ("term", field, unescape(word), wildcard)
        self._suffix()
        return node


def unescape(text):
    return re.sub(r"\\(.)", r"\1", text)


def min_should_match(spec, n):
    """Solr's mm parameter, e.g. '2<-1 5<80%'."""
    def simple(s, n):
        if s.endswith("%"):
            p = int(s[:-1])
            c = n * abs(p) // 100
            return c if p >= 0 else n - c
        v = int(s)
        return v if v >= 0 else n + v
    try:
        result = n
        if "<" in spec:
            for cond in spec.split():
                k, _, s = cond.partition("<")
                if n > int(k):
                    result = simple(s, n)
        elif spec.strip():
            result = simple(spec.strip(), n)
    except ValueError:
        log.warning("unsupported mm %r, requiring all clauses", spec)
        result = n
    return max(0, min(n, result))


# ---------------------------------------------------------------- matching

class Context:
    """How bare terms are searched: lucene default field or dismax qf."""

    def __init__(self, qf=None, tie=0.0, mm=None):
        self.qf, self.tie, self.mm = qf or [], tie, mm


def leaf_match(node, field, doc):
    kind = node[0]
    vals = values(doc, field)
    ftype = field_type(field)
    if kind == "range":
        conv = converter(field)
        low, high = (None if b is None else conv(b) for b in node[2:4])
        for v in vals:
            x = conv(v)
            if x is None:
                continue
            if low is not None and (x < low or (x == low and not node[4])):
                continue
            if high is not None and (x > high or (x == high and not node[5])):
                continue
            return True
        return False
    value = node[2]
    wildcard = kind == "term" and node[3]
    if wildcard and value == "*":
        return bool(vals)
    if ftype == "text":
        if wildcard:
            rx = wildcard_re(value.lower())
            return any(rx.fullmatch(t) for v in vals
                       for t in analyze(v, stemming=False))
        query = analyze(value)
        return bool(query) and any(
            query == tokens[i:i + len(query)]
            for tokens in map(analyze, vals)
            for i in range(len(tokens) - len(query) + 1))
    if ftype == "ngram":
        parts = value.lower().split()
        return any(all(p in v.lower() for p in parts) for v in vals)
    if wildcard:
        rx = wildcard_re(value)
        return any(rx.fullmatch(v) for v in vals)
    if ftype in ("date", "number"):
        conv = converter(field)
        target = conv(value)
        return target is not None and any(conv(v) == target for v in vals)
    return value in vals


def evaluate(node, doc, ctx, top=False):
    """Return a score if ``doc`` matches ``node``, else None."""
    kind = node[0]
    if kind == "bool":
        score, should, matched = 0.0, 0, 0
        has_must = has_positive = False
        for occur, sub in node[1]:
            s = evaluate(sub, doc, ctx)
            if occur == "not":
                if s is not None:
                    return None
                continue
            has_positive = True
            if occur == "must":
                has_must = True
                if s is None:
                    return None
                score += s
            else:
                should += 1
                if s is not None:
                    matched += 1
                    score += s
        if not has_positive:
            return 1.0 if node[1] else None  # pure negative: *:* minus them
        needed = min_should_match(ctx.mm, should) if (
            top and ctx.mm is not None) else 0
        if not has_must:
            needed = max(needed, 1)
        return score if matched >= needed else None
    field = node[1]
    if field is None:  # dismax: best qf field plus tie * the others
        scores = [boost for f, boost in ctx.qf if leaf_match(node, f, doc)]
        if not scores:
            return None
        return max(scores) + ctx.tie * (sum(scores) - max(scores))
    if field == "*" and kind == "term" and node[2] == "*":
        return 1.0
    return 1.0 if leaf_match(node, field, doc) else None


# ---------------------------------------------------------------- index

def truthy(value):
    return str(value).lower() in ("true", "on", "yes", "1")


class Core:
    """One core's documents, keyed by CKAN's uniqueKey ``index_id``."""

    def __init__(self, name):
        self.name = name
        self.docs = {}
        self.version = 0

    def add(self, doc):
        clean = {}
        for key, value in doc.items():
            if isinstance(value, (list, tuple)):
                value = [v for v in value if v is not None]
                if not value:
                    continue
                if not is_multi(key):
                    if len(value) > 1:
                        raise SolrError(
                            "ERROR: [doc={}] multiple values encountered for "
                            "non multiValued field {}: {}".format(doc.get("index_id"), key, value))
                    value = value[0]
            elif value is None:
                continue
            elif isinstance(value, dict):
                raise SolrError("atomic updates / child documents are not "
                                f"supported by the stand-in (field {key})")
            elif is_multi(key):
                value = [value]
            if field_type(key) == "date":
                dates = [parse_date(as_str(v)) for v in (
                    value if isinstance(value, list) else [value])]
                if None in dates:
                    raise SolrError(
                        f"ERROR: [doc={doc.get('index_id')}] Error adding field "
                        f"'{key}'='{value}' msg=Invalid Date String")
                dates = [format_date(d) for d in dates]
                value = dates if isinstance(value, list) else dates[0]
            clean[key] = value
        key = clean.get("index_id", clean.get("id"))
        if key is None:
            raise SolrError("Document is missing mandatory uniqueKey field: "
                            "index_id")
        clean.setdefault("indexed_ts", format_date(parse_date("NOW")))
        self.version += 1
        clean["_version_"] = self.version
        self.docs.pop(str(key), None)  # re-added documents go last, as in Solr
        self.docs[str(key)] = clean

    def delete_query(self, query, default_op):
        node = QueryParser(query, default_op=default_op).parse()
        for key in [k for k, d in self.docs.items()
                    if evaluate(node, d, Context(), top=True) is not None]:
            del self.docs[key]

    def select(self, params):
        def p(name, default=None):
            return params.get(name, [default])[-1]

        q = p("q") or "*:*"
        op = p("q.op", "OR")
        if p("defType", "lucene") in ("dismax", "edismax"):
            qf = []
            for item in (p("qf") or p("df", "text")).split():
                name, _, boost = item.partition("^")
                qf.append((name, float(boost or 1)))
            mm = p("mm") or ("100%" if op.upper() == "AND" else "0%")
            query_ctx = Context(qf, float(p("tie", 0) or 0), mm)
            query = QueryParser(q, default_field=None).parse()
        else:
            if p("defType", "lucene") != "lucene":
                log.warning("unsupported defType %r, using lucene",
                            p("defType"))
            query_ctx = Context()
            query = QueryParser(q, p("df", "text"), op).parse()
        filters = [QueryParser(fq, p("df", "text"), op).parse()
                   for fq in params.get("fq", []) if fq.strip()]
        try:
            start, rows = int(p("start", 0) or 0), int(p("rows", 10) or 0)
        except ValueError as e:
            raise SolrError(str(e)) from e

        hits = []
        for doc in list(self.docs.values()):
            if all(evaluate(f, doc, Context(), top=True) is not None
                   for f in filters):
                score = evaluate(query, doc, query_ctx, top=True)
                if score is not None:
                    hits.append((score, doc))
        sort_hits(hits, p("sort") or "score desc")

        fl = [f for item in params.get("fl", ["*"])
              for f in re.split(r"[,\s]+", item) if f]
        result = {
            "responseHeader": {"status": 0, "QTime": 0, "params": {
                k: v[-1] if len(v) == 1 else v for k, v in params.items()}},
            "response": {"numFound": len(hits), "start": start,
                         "numFoundExact": True,
                         "docs": [project(doc, fl, score) for score, doc
                                  in hits[start:start + max(rows, 0)]]},
        }
        if truthy(p("facet", "false")):
            result["facet_counts"] = {
                "facet_queries": {}, "facet_ranges": {},
                "facet_intervals": {}, "facet_heatmaps": {},
                "facet_fields": {
                    name: facet(name, hits, self.docs.values(), p)
                    for name in (re.sub(r"^\{!.*?\}", "", f) for f in
                                 params.get("facet.field", []))}}
        return result


def sort_hits(hits, spec):
    """Stable multi-key sort; missing values last (sortMissingLast)."""
    keys = []
    for clause in [c.strip() for c in spec.split(",") if c.strip()]:
        parts = clause.split()
        if len(parts) != 2 or parts[1].lower() not in ("asc", "desc"):
            raise SolrError("Can't determine a Sort Order (asc or desc) in "
                            f"sort spec '{clause}'")
        if "(" in parts[0]:
            log.warning("sort functions are not supported: %r", clause)
            continue
        keys.append((parts[0], parts[1].lower() == "desc"))
    for field, desc in reversed(keys):
        if field == "score":
            hits.sort(key=lambda h: h[0], reverse=desc)
            continue
        conv = converter(field)

        def key(hit, conv=conv, field=field):
            vals = [conv(v) for v in values(hit[1], field)]
            vals = [v for v in vals if v is not None]
            return vals[0] if vals else None
        keyed = [(key(h), h) for h in hits]
        present = [kh for kh in keyed if kh[0] is not None]
        present.sort(key=lambda kh: kh[0], reverse=desc)
        hits[:] = [h for _, h in present] + [h for k, h in keyed if k is None]


def project(doc, fl, score):
    """Apply ``fl``: stored fields only, plus ``score`` and aliases."""
    out = {}
    for item in fl:
        alias, _, name = item.rpartition(":")
        if name == "score":
            out[alias or "score"] = score
        elif name.startswith("[") or "(" in name:
            log.warning("fl transformers/functions are not supported: %r",
                        item)
        elif "*" in name or "?" in name:
            rx = wildcard_re(name)
            out.update({k: v for k, v in doc.items()
                        if is_stored(k) and rx.fullmatch(k)})
        elif name in doc and is_stored(name):
            out[alias or name] = doc[name]
    return out


def facet(field, hits, all_docs, p):
    """facet.field counts as Solr's flat [value, count, ...] list."""
    def param(name, default):
        return p(f"f.{field}.facet.{name}", p("facet." + name, default))
    limit = int(param("limit", 100))
    mincount = int(param("mincount", 0))
    offset = int(param("offset", 0))
    order = param("sort", "count" if limit > 0 else "index")
    counts = {}
    if mincount <= 0:
        for doc in all_docs:
            for v in raw_values(doc, field):
                counts.setdefault(v, 0)
    for _, doc in hits:
        for v in set(raw_values(doc, field)):
            counts[v] = counts.get(v, 0) + 1
    items = [(v, c) for v, c in counts.items() if c >= mincount]
    items.sort(key=(lambda vc: (-vc[1], vc[0])) if order == "count"
               else (lambda vc: vc[0]))
    items = items[offset:offset + limit] if limit >= 0 else items[offset:]
    return [x for vc in items for x in vc]


# ---------------------------------------------------------------- updates

def parse_update(body, content_type):
    """Turn a JSON or XML update body into (command, argument) pairs."""
    text = body.decode("utf-8").strip()
    if not text:
        return []
    if "xml" in content_type or text.startswith("<"):
        root = ET.fromstring(text)
        elements = [root] if root.tag in (
            "add", "delete", "commit", "optimize", "rollback") else list(root)
        commands = []
        for el in elements:
            if el.tag == "add":
                for doc_el in el.findall("doc"):
                    doc = {}
                    for f in doc_el.findall("field"):
                        if f.get("update"):
                            raise SolrError("atomic updates are not supported")
                        if f.get("null") == "true":
                            continue
                        doc.setdefault(f.get("name"), []).append(f.text or "")
                    commands.append(("add", {k: v if len(v) > 1 else v[0]
                                             for k, v in doc.items()}))
            elif el.tag == "delete":
                commands += [("delete_id" if c.tag == "id" else "delete_query",
                              c.text or "") for c in el]
            else:
                commands.append((el.tag, None))
        return commands
    # keep repeated keys ({"add": ..., "add": ...} is valid Solr JSON)
    data = json.loads(text, object_pairs_hook=lambda pairs: ("obj", pairs))
    if isinstance(data, list):  # a JSON array of documents (pysolr's add)
        return [("add", as_dict(doc)) for doc in data]
    commands = []
    for key, value in data[1]:
        value = as_dict(value)
        if key == "add":
            for item in value if isinstance(value, list) else [value]:
                commands.append(("add", item["doc"]))
        elif key == "delete":
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, dict):
                    commands.append(("delete_id", str(item["id"])) if "id" in
                                    item else ("delete_query", item["query"]))
                else:
                    commands.append(("delete_id", str(item)))
        elif key in ("commit", "optimize", "rollback"):
            commands.append((key, None))
        else:  # a single document
            return [("add", as_dict(data))]
    return commands


def as_dict(value):
    """Undo the ("obj", pairs) wrapping of parse_update's JSON decoding."""
    if isinstance(value, tuple) and value[:1] == ("obj",):
        return {k: as_dict(v) for k, v in value[1]}
    if isinstance(value, list):
        return [as_dict(v) for v in value]
    return value


# ---------------------------------------------------------------- server

class Store:
    """All cores plus locking and the optional JSON data file."""

    def __init__(self, data_file=None):
        self.lock = threading.RLock()
        self.cores = {}
        self.data_file = data_file
        if data_file and os.path.exists(data_file):
            with open(data_file, encoding="utf-8") as fd:
                for name, docs in json.load(fd).get("cores", {}).items():
                    core = self.core(name)
                    for doc in docs:
                        core.add(doc)
            log.info("loaded %s", data_file)

    def core(self, name):
        with self.lock:
            return self.cores.setdefault(name, Core(name))

    def save(self):
        if not self.data_file:
            return
        with self.lock:
            data = {"cores": {n: list(c.docs.values())
                              for n, c in self.cores.items()}}
            tmp = f"{self.data_file}.tmp{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as fd:
                json.dump(data, fd)
                fd.flush()
                os.fsync(fd.fileno())
            os.replace(tmp, self.data_file)

    def update(self, core, params, body, content_type):
        commands = parse_update(body, content_type)
        commit = any(truthy(params.get(k, ["false"])[-1])
                     for k in ("commit", "softCommit", "optimize"))
        with self.lock:
            for command, arg in commands:
                if command == "add":
                    core.add(arg)
                elif command == "delete_id":
                    core.docs.pop(arg, None)
                elif command == "delete_query":
                    core.delete_query(arg, params.get("q.op", ["OR"])[-1])
                elif command in ("commit", "optimize"):
                    commit = True
                else:
                    log.warning("unsupported update command %r", command)
            if commit:
                self.save()
        return {"responseHeader": {"status": 0, "QTime": 0}}


SCHEMA_XML = ('<?xml version="1.0" encoding="UTF-8"?>\n'
              f'<schema name="{SCHEMA_NAME}" version="1.6">\n'
              '  <uniqueKey>index_id</uniqueKey>\n</schema>\n')


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "solr-standin/1"

    def do_GET(self):
        self.handle_request()

    def do_POST(self):
        self.handle_request()

    def log_message(self, fmt, *args):
        log.debug("%s " + fmt, self.address_string(), *args)

    def send(self, code, body, content_type="application/json; charset=utf-8"):
        if not isinstance(body, str):
            body = json.dumps(body, ensure_ascii=False)
        data = body.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_request(self):
        url = urlsplit(self.path)
        params = parse_qs(url.query, keep_blank_values=True)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        content_type = self.headers.get("Content-Type", "")
        if "x-www-form-urlencoded" in content_type:
            for k, v in parse_qs(body.decode("utf-8"),
                                 keep_blank_values=True).items():
                params.setdefault(k, []).extend(v)
        segments = [s for s in url.path.split("/") if s]
        if segments and segments[0] == "solr":
            segments = segments[1:]
        core_name, handler = (segments[0] if segments else ""), "/".join(
            segments[1:])
        store = self.server.store
        try:
            if handler == "select":
                with store.lock:
                    result = store.core(core_name).select(params)
                self.send(200, result)
            elif handler.startswith("update"):
                self.send(200, store.update(store.core(core_name), params,
                                            body, content_type))
            elif (handler == "schema" and params.get("wt") == ["schema.xml"]
                  or handler == "admin/file"):
                self.send(200, SCHEMA_XML, "application/xml; charset=utf-8")
            elif handler.startswith("schema"):
                info = {"name": SCHEMA_NAME, "version": 1.6,
                        "uniqueKey": "index_id"}
                key = handler.partition("/")[2]
                self.send(200, {key: info[key]} if key in info else
                          {"responseHeader": {"status": 0}, "schema": info})
            elif handler == "admin/ping":
                self.send(200, {"responseHeader": {"status": 0},
                                "status": "OK"})
            else:
                log.warning("unsupported request %s %s", self.command,
                            self.path)
                raise SolrError(f"unknown handler: {url.path}", 404)
        except SolrError as e:
            log.warning("%s %s: %s", self.command, self.path, e)
            self.send(e.code, {"responseHeader": {"status": e.code},
                               "error": {"msg": str(e), "code": e.code}})
        except Exception as e:  # answer instead of dropping the connection
            code = 400 if isinstance(e, (ValueError, ET.ParseError)) else 500
            log.log(logging.WARNING if code == 400 else logging.ERROR,
                    "%s %s: %r", self.command, self.path, e,
                    exc_info=code == 500)
            self.send(code, {"responseHeader": {"status": code},
                             "error": {"msg": f"{type(e).__name__}: {e}",
                                       "code": code}})


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8983)
    parser.add_argument("--data-file", help="load at start, save on commit")
    parser.add_argument("--verbose", action="store_true",
                        help="log every request")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s solr-standin %(levelname)s "
                               "%(message)s")
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    server.store = Store(args.data_file)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(
        target=server.shutdown).start())
    log.info("Solr stand-in (tests/demo only) on http://%s:%d/solr/<core>",
             args.host, server.server_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.store.save()
        server.server_close()
        log.info("stopped")


if __name__ == "__main__":
    main()
