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
    MAX_EMAIL,
    MAX_NAME,
    MAX_SOURCE,
    letter_class,
)

PROBLEM = {"$ref": "#/components/responses/Problem"}
ID_PARAM = {
    "name": "statement_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]*$"},
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
            "/api/v1/statements/{statement_id}/endorsements": {
                "post": {
                    "summary": "Endorse a statement",
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
                        "503": PROBLEM,
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
                        }
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
                            "maxLength": MAX_EMAIL,
                            "pattern": EMAIL_PATTERN,
                            "description": (
                                "An email address; surrounding whitespace is trimmed. Kept "
                                "only as a keyed hash, to refuse a second endorsement."
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
                    },
                },
                "EndorsementResult": {
                    "type": "object",
                    "required": ["status", "count"],
                    "properties": {
                        "status": {"enum": ["counted", "duplicate"]},
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
