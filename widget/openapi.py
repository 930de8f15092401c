"""The OpenAPI 3.1 description of the public API (``/api/v1/openapi.json``).

``tests/test_openapi.py`` keeps it true: every public route is documented, every
documented path exists, and live responses carry exactly the documented fields;
``tests/test_schemathesis.py`` checks that the API accepts exactly what it describes. The
request rules come from ``validation``, so the document and the checks cannot drift.
"""

from __future__ import annotations

from typing import Any

from .validation import (
    COUNTRY_CODES,
    EMAIL_PATTERN,
    FORBIDDEN,
    LANG_PATTERN,
    MAX_EMAIL,
    MAX_NAME,
    MAX_SOURCE,
    SPECIAL_USE_EMAIL,
    letter_class,
)

PROBLEM = {"$ref": "#/components/responses/Problem"}
ID_PARAM = {
    "name": "statement_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]*$"},
}


def TEXT(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def INT_PARAM(
    name: str, description: str, required: bool, minimum: int = 0, maximum: int | None = None
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": minimum}
    if maximum is not None:
        schema["maximum"] = maximum
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


def _json(schema_ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}},
    }


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Undersign API",
            "version": "1",
            "description": "Read statements and their live endorsement counts; endorse them.",
        },
        "paths": {
            "/api/v1/statements": {
                "get": {
                    "summary": "All statements with their counts",
                    "parameters": [{"name": "lang", "in": "query", "schema": {"type": "string"}}],
                    "responses": {
                        "200": _json("StatementList", "The statements"),
                        "403": PROBLEM,
                        "503": PROBLEM,
                    },
                }
            },
            "/api/v1/statements/{statement_id}": {
                "get": {
                    "summary": "One statement",
                    "parameters": [
                        ID_PARAM,
                        {"name": "lang", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": _json("Statement", "The statement"),
                        "403": PROBLEM,
                        "404": PROBLEM,
                        "503": PROBLEM,
                    },
                }
            },
            "/api/v1/statements/{statement_id}/count": {
                "get": {
                    "summary": "The live count (ETag; If-None-Match gives 304)",
                    "parameters": [ID_PARAM],
                    "responses": {
                        "200": _json("Count", "The count"),
                        "304": {"description": "Unchanged since the ETag you sent"},
                        "403": PROBLEM,
                        "404": PROBLEM,
                        "503": PROBLEM,
                    },
                }
            },
            "/api/v1/statements/{statement_id}/challenge": {
                "get": {
                    "summary": "A proof-of-work challenge for one endorsement (ALTCHA v2)",
                    "description": (
                        "An ALTCHA challenge (v2, `PBKDF2/SHA-256`, signed by the service, "
                        "bound to this statement, expiring within 10 minutes). Solve it with "
                        "ALTCHA's own widget or library (`altcha.solve_challenge` in Python) "
                        "and send the base64 payload as `altcha` with the endorsement; each "
                        "solution counts once. Rate limited per client "
                        "(`WIDGET_CHALLENGE_LIMIT`; its 429 has `limit` `challenge`). "
                        "`Cache-Control: no-store`."
                    ),
                    "parameters": [ID_PARAM],
                    "responses": {
                        "200": _json("Challenge", "A fresh challenge"),
                        "403": PROBLEM,
                        "404": PROBLEM,
                        "429": PROBLEM,
                        "503": PROBLEM,
                    },
                }
            },
            "/api/v1/statements/{statement_id}/endorsements": {
                "post": {
                    "summary": "Endorse a statement",
                    "description": (
                        "With the proof of work on (the default), `altcha` must carry a "
                        "solved challenge from `GET .../challenge`, or the answer is 422 with "
                        "`errors.altcha`. A 429 names the tier that refused in `limit` "
                        "(`client`, `network`, `source` or `statement`) and says when to try "
                        "again in `Retry-After`. A retry after a lost answer is a duplicate "
                        "(200), never a second count. On a statement with email confirmation "
                        "every valid endorsement answers 202 `pending` with the unchanged "
                        "count, whether the address is new, pending or already confirmed: "
                        "it counts once the owner of the address confirms through the link "
                        "mailed to it."
                    ),
                    "parameters": [ID_PARAM],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/EndorsementRequest"}
                            }
                        },
                    },
                    "responses": {
                        "201": _json("EndorsementResult", "Counted"),
                        "200": _json("EndorsementResult", "Already endorsed: nothing changed"),
                        "202": _json(
                            "EndorsementResult",
                            "Email confirmation: waiting for the owner of the address",
                        ),
                        **{
                            code: PROBLEM
                            for code in (
                                "400",
                                "403",
                                "404",
                                "409",
                                "413",
                                "415",
                                "422",
                                "429",
                                "503",
                            )
                        },
                    },
                }
            },
            "/api/v1/statements/{statement_id}/recent": {
                "get": {
                    "summary": "The latest endorsers, as visitors may see them",
                    "parameters": [ID_PARAM],
                    "responses": {
                        "200": _json("Recent", "Newest first"),
                        "403": PROBLEM,
                        "404": PROBLEM,
                        "503": PROBLEM,
                    },
                }
            },
            "/api/v1/statements/{statement_id}/events": {
                "get": {
                    "summary": "Live count as Server-Sent Events",
                    "description": (
                        "A `retry:` field and the current count at once, then an event "
                        '`count` with data `{"id", "count"}` whenever the count changes '
                        "(coalesced: at most a few per second, the last one always exact), "
                        "and a comment line as heartbeat while idle."
                    ),
                    "parameters": [ID_PARAM],
                    "responses": {
                        "200": {
                            "description": "An endless event stream",
                            "content": {
                                "text/event-stream": {
                                    "schema": {"type": "string"},
                                    "example": (
                                        "retry: 3000\nevent: count\n"
                                        'data: {"id": "dongelek-ystel", "count": 1234}\n\n'
                                    ),
                                }
                            },
                        },
                        "403": PROBLEM,
                        "404": PROBLEM,
                        "429": PROBLEM,
                        "503": PROBLEM,
                    },
                }
            },
            "/api/v1/events": {
                "get": {
                    "summary": "Live counts of several statements in one Server-Sent Events stream",
                    "description": (
                        "The same stream as `/api/v1/statements/{statement_id}/events` for up to "
                        "50 statements at once, so that a page (or a browser's tabs, which elect "
                        "one of them to listen) needs one connection for every widget: a "
                        "`retry:` field and each statement's current count at once, in the order "
                        'named, then an event `count` with data `{"id", "count"}` whenever one '
                        "of them changes (coalesced per statement, the last one always exact), "
                        "and a comment line as heartbeat while idle. An id named twice counts "
                        "once."
                    ),
                    "parameters": [
                        {
                            "name": "statements",
                            "in": "query",
                            "required": True,
                            "description": "Comma-separated statement ids (1 to 50).",
                            "schema": {"type": "string", "minLength": 1},
                            "example": "dongelek-ystel",
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "An endless event stream",
                            "content": {
                                "text/event-stream": {
                                    "schema": {"type": "string"},
                                    "example": (
                                        "retry: 3000\nevent: count\n"
                                        'data: {"id": "dongelek-ystel", "count": 1234}\n\n'
                                        "event: count\n"
                                        'data: {"id": "clean-air", "count": 56}\n\n'
                                    ),
                                }
                            },
                        },
                        "403": PROBLEM,
                        "404": PROBLEM,
                        "422": PROBLEM,
                        "429": PROBLEM,
                        "503": PROBLEM,
                    },
                }
            },
            "/api/v1/log/key": {
                "get": {
                    "summary": "The transparency log's verifier key",
                    "description": (
                        "One line, `<name>+<hex key ID>+<base64(0x01 || Ed25519 public key)>` "
                        "(the C2SP signed-note vkey form). Pin it: get it from the coalition, "
                        "not only from the service."
                    ),
                    "responses": {"200": TEXT("The verifier key, one line"), "403": PROBLEM},
                }
            },
            "/api/v1/statements/{statement_id}/checkpoint": {
                "get": {
                    "summary": "The log's latest signed checkpoint",
                    "description": (
                        "A C2SP signed note whose body is a C2SP tlog-checkpoint: the origin "
                        "`<host>/undersign/<statement id>`, the tree size, the base64 RFC 6962 "
                        "root hash; then the Ed25519 signature line."
                    ),
                    "parameters": [ID_PARAM],
                    "responses": {
                        "200": TEXT("The signed checkpoint"),
                        "403": PROBLEM,
                        "404": PROBLEM,
                        "503": PROBLEM,
                    },
                }
            },
            "/api/v1/statements/{statement_id}/log": {
                "get": {
                    "summary": "Entries of the public log, one RFC 8785 canonical JSON a line",
                    "description": (
                        "Entries `start` to `start + limit - 1` of the sealed log (fewer at its "
                        "end). Each line's bytes, without the newline, are the Merkle leaf. A "
                        "full page never changes and is cached for a year."
                    ),
                    "parameters": [
                        ID_PARAM,
                        INT_PARAM("start", "The first entry's index (default 0)", False),
                        INT_PARAM("limit", "How many entries (default 1000)", False, 1, 1000),
                    ],
                    "responses": {
                        "200": {
                            "description": "JSON Lines",
                            "content": {"application/jsonl": {"schema": {"type": "string"}}},
                        },
                        **{code: PROBLEM for code in ("400", "403", "404", "422", "503")},
                    },
                }
            },
            "/api/v1/statements/{statement_id}/proof/inclusion": {
                "get": {
                    "summary": "RFC 9162 inclusion proof of entry `index` in the tree of `size`",
                    "parameters": [
                        ID_PARAM,
                        INT_PARAM("index", "The entry", True),
                        INT_PARAM("size", "The tree size, at most the sealed size", True, 1),
                    ],
                    "responses": {
                        "200": _json("InclusionProof", "The proof"),
                        **{code: PROBLEM for code in ("400", "403", "404", "422", "503")},
                    },
                }
            },
            "/api/v1/statements/{statement_id}/proof/consistency": {
                "get": {
                    "summary": "RFC 9162 consistency proof between two tree sizes",
                    "parameters": [
                        ID_PARAM,
                        INT_PARAM("from", "The older size", True, 1),
                        INT_PARAM("to", "The newer size, at most the sealed size", True, 1),
                    ],
                    "responses": {
                        "200": _json("ConsistencyProof", "The proof"),
                        **{code: PROBLEM for code in ("400", "403", "404", "422", "503")},
                    },
                }
            },
            "/api/v1/statements/{statement_id}/receipts/{commit}": {
                "get": {
                    "summary": "An endorsement by its receipt's commitment (sha256 of the secret)",
                    "description": (
                        "Once sealed (within seconds): its index, its status by the log's count "
                        "rule, the checkpoint, and the inclusion proof at that checkpoint's size."
                    ),
                    "parameters": [
                        ID_PARAM,
                        {
                            "name": "commit",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                        },
                    ],
                    "responses": {
                        "200": _json("Receipt", "The endorsement in the log"),
                        **{code: PROBLEM for code in ("403", "404", "503")},
                    },
                }
            },
            "/api/v1/statements/{statement_id}/texts/{digest}": {
                "get": {
                    "summary": "A statement text version (Markdown), by its SHA-256",
                    "parameters": [
                        ID_PARAM,
                        {
                            "name": "digest",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The text exactly as endorsed",
                            "content": {"text/markdown": {"schema": {"type": "string"}}},
                        },
                        **{code: PROBLEM for code in ("403", "404", "503")},
                    },
                }
            },
            "/api/v1/statements/{statement_id}/withdrawals": {
                "post": {
                    "summary": "Withdraw an endorsement with its receipt's secret",
                    "description": (
                        "Takes the endorsement out of the count, adds a withdraw entry to the "
                        "log, and erases its stored name, country and email HMAC (so the same "
                        "person may endorse again). The same call again changes nothing."
                    ),
                    "parameters": [ID_PARAM],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["secret"],
                                    "properties": {
                                        "secret": {
                                            "type": "string",
                                            "minLength": 16,
                                            "maxLength": 200,
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json("Withdrawal", "Withdrawn"),
                        **{
                            code: PROBLEM
                            for code in ("400", "403", "404", "413", "415", "422", "429", "503")
                        },
                    },
                }
            },
            "/api/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1 document",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["openapi", "info", "paths"],
                                        "additionalProperties": True,
                                    }
                                }
                            },
                        },
                        "403": PROBLEM,
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness: 200 when Redis answers",
                    "responses": {"200": _json("Health", "Healthy"), "503": PROBLEM},
                }
            },
        },
        "components": {
            "schemas": {
                "StatementSummary": {
                    "type": "object",
                    "required": ["id", "title", "excerpt", "count", "goal", "url"],
                    "properties": {
                        "id": {"type": "string"},
                        "title": {"type": "string"},
                        "excerpt": {"type": "string"},
                        "count": {"type": "integer", "minimum": 0},
                        "goal": {"type": "integer", "minimum": 1},
                        "url": {"type": "string", "format": "uri"},
                    },
                },
                "StatementList": {
                    "type": "object",
                    "required": ["statements"],
                    "properties": {
                        "statements": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/StatementSummary"},
                        }
                    },
                },
                "Statement": {
                    "type": "object",
                    "required": [
                        "id",
                        "title",
                        "excerpt",
                        "count",
                        "goal",
                        "languages",
                        "lang",
                        "url",
                        "open",
                    ],
                    "properties": {
                        "id": {"type": "string"},
                        "title": {"type": "string"},
                        "excerpt": {"type": "string"},
                        "count": {"type": "integer", "minimum": 0},
                        "goal": {"type": "integer", "minimum": 1},
                        "languages": {"type": "array", "items": {"type": "string"}},
                        "lang": {"type": "string"},
                        "original_lang": {"type": "string"},
                        "author": {"type": "string"},
                        "url": {"type": "string", "format": "uri"},
                        "open": {"type": "boolean"},
                        "opens": {"type": ["string", "null"], "format": "date-time"},
                        "closes": {"type": ["string", "null"], "format": "date-time"},
                    },
                },
                "Count": {
                    "type": "object",
                    "required": ["id", "count"],
                    "properties": {"id": {"type": "string"}, "count": {"type": "integer"}},
                },
                "EndorsementRequest": {
                    "type": "object",
                    "required": ["name", "email", "consent"],
                    "properties": {
                        "name": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": MAX_NAME,
                            "pattern": letter_class(),
                            "not": {"pattern": FORBIDDEN},
                            "description": (
                                "At least one letter (any script); no control characters, "
                                "line separators, bidi overrides or lone surrogates. Stored "
                                "trimmed, NFKC-normalised, without invisible code points."
                            ),
                        },
                        "email": {
                            "type": "string",
                            "format": "email",
                            "maxLength": MAX_EMAIL,
                            "pattern": EMAIL_PATTERN,
                            "not": {"pattern": SPECIAL_USE_EMAIL},
                            "description": (
                                "An email address (its syntax checked by email-validator, "
                                "without DNS); surrounding whitespace is trimmed. Kept only "
                                "as a keyed hash, to refuse a second endorsement."
                            ),
                        },
                        "country": {
                            "enum": [
                                None,
                                "",
                                *sorted(COUNTRY_CODES),
                                *sorted(c.lower() for c in COUNTRY_CODES),
                            ],
                            "description": (
                                "ISO 3166-1 alpha-2 code (upper or lower case); optional: "
                                "leave it out, null or empty"
                            ),
                        },
                        "consent": {"const": True},
                        "public": {
                            "type": "boolean",
                            "description": ("Show the first name and country in recent endorsers"),
                        },
                        "source": {
                            "type": "string",
                            "maxLength": MAX_SOURCE,
                            "not": {"pattern": FORBIDDEN},
                            "description": "Allied page origin, sent by the widget iframe",
                        },
                        "lang": {
                            "type": "string",
                            "pattern": LANG_PATTERN,
                            "description": (
                                "The language of the statement text shown (the log records "
                                "that version); default the original"
                            ),
                        },
                        "altcha": {
                            "type": "string",
                            "description": (
                                "The solved proof of work: ALTCHA's base64 payload, as its "
                                "widget submits it"
                            ),
                        },
                        "website": {
                            "description": (
                                "Leave empty or leave out: a field people never see. Any "
                                "non-empty value, of any type, marks a machine: it is "
                                "answered like a success and nothing is counted"
                            ),
                        },
                    },
                },
                "Challenge": {
                    "type": "object",
                    "required": ["parameters", "signature"],
                    "properties": {
                        "parameters": {
                            "type": "object",
                            "required": ["algorithm", "nonce", "salt", "cost", "keyPrefix"],
                            "properties": {
                                "algorithm": {"const": "PBKDF2/SHA-256"},
                                "nonce": {"type": "string"},
                                "salt": {"type": "string"},
                                "cost": {"type": "integer", "minimum": 1},
                                "keyLength": {"type": "integer"},
                                "keyPrefix": {"type": "string"},
                                "keySignature": {"type": "string"},
                                "expiresAt": {"type": "integer"},
                                "data": {"type": "object"},
                            },
                        },
                        "signature": {"type": "string"},
                    },
                },
                "EndorsementResult": {
                    "type": "object",
                    "required": ["status", "count"],
                    "properties": {
                        "status": {"enum": ["counted", "duplicate", "pending"]},
                        "count": {"type": "integer"},
                        "receipt": {
                            "type": "object",
                            "description": "With a counted endorsement only",
                            "required": ["secret", "url"],
                            "properties": {
                                "secret": {"type": "string"},
                                "url": {"type": "string", "format": "uri"},
                            },
                        },
                    },
                },
                "InclusionProof": {
                    "type": "object",
                    "required": ["index", "size", "hashes"],
                    "properties": {
                        "index": {"type": "integer"},
                        "size": {"type": "integer"},
                        "hashes": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "ConsistencyProof": {
                    "type": "object",
                    "required": ["from", "to", "hashes"],
                    "properties": {
                        "from": {"type": "integer"},
                        "to": {"type": "integer"},
                        "hashes": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "Receipt": {
                    "type": "object",
                    "required": ["index", "status", "checkpoint", "inclusion"],
                    "properties": {
                        "index": {"type": "integer"},
                        "status": {"enum": ["counted", "struck", "withdrawn"]},
                        "checkpoint": {"type": "string"},
                        "inclusion": {
                            "type": "object",
                            "required": ["size", "hashes"],
                            "properties": {
                                "size": {"type": "integer"},
                                "hashes": {"type": "array", "items": {"type": "string"}},
                            },
                        },
                    },
                },
                "Withdrawal": {
                    "type": "object",
                    "required": ["status", "count"],
                    "properties": {
                        "status": {"const": "withdrawn"},
                        "count": {"type": "integer"},
                    },
                },
                "Recent": {
                    "type": "object",
                    "required": ["id", "recent"],
                    "properties": {
                        "id": {"type": "string"},
                        "recent": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "country", "time"],
                                "properties": {
                                    "name": {
                                        "type": ["string", "null"],
                                        "maxLength": 20,
                                        "description": (
                                            "First name (a one-word name: its initial), "
                                            "only if they chose to be shown"
                                        ),
                                    },
                                    "country": {
                                        "type": ["string", "null"],
                                        "description": "Only if they chose to be shown",
                                    },
                                    "time": {
                                        "type": "string",
                                        "format": "date-time",
                                        "description": "To the minute (seconds are 00)",
                                    },
                                },
                            },
                        },
                    },
                },
                "Health": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {"status": {"const": "ok"}},
                },
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "instance": {"type": "string"},
                        "errors": {"type": "object", "additionalProperties": {"type": "string"}},
                        "retry_after": {"type": "integer"},
                        "limit": {
                            "enum": [
                                "client",
                                "network",
                                "source",
                                "statement",
                                "challenge",
                                "form",
                                "withdraw",
                            ],
                            "description": (
                                "The limit that refused (429): an endorsement's tier, or "
                                "the per-client limit on challenges, the no-JS form or "
                                "withdrawals"
                            ),
                        },
                        "count": {
                            "type": "integer",
                            "description": "The statement's count, when it is closed (409)",
                        },
                    },
                },
            },
            "responses": {
                "Problem": {
                    "description": "RFC 9457 problem details",
                    "content": {
                        "application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}
                        }
                    },
                }
            },
        },
    }
